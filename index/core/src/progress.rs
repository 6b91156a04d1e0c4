//! How long-running library work reports progress without knowing about terminals.

/// Receives progress from index builds and encodes; the CLI draws bars with it.
pub trait Progress: Sync {
    /// A new stage begins; `total` is in the stage's own units (texts, vectors), 0 if unknown.
    fn stage(&self, name: &str, total: u64);
    /// `items` more units done, `tokens` more real tokens encoded.
    fn advance(&self, items: u64, tokens: u64);
    /// A line worth showing the user (resumed builds, skipped work).
    fn note(&self, message: &str);
    /// A short running figure for the current stage (training loss).
    fn detail(&self, _text: &str) {}
}

/// Discards all progress (tests, `--quiet`).
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
    fn note(&self, _: &str) {}
}
