//! cpack-core: the small vocabulary every cpack library shares.
//!
//! - [`fsutil`]: crash-safe writes (temp file, fsync, rename, directory
//!   fsync), JSON files read with their path in the error, size + CRC-32
//!   checksums recorded at write time and verified at read time, and a
//!   `flock` that names the process holding it.
//! - [`output`]: the one way a command writes an output the user named:
//!   `-` is stdout, files are replaced atomically, symlinks followed,
//!   devices and FIFOs written through, directories refused.
//! - [`progress`]: how long-running library work reports stages and counts
//!   without knowing about terminals (the binary draws the bars).
//! - [`Error`]: file errors that name the file and what was being done.
//! - [`InvalidSetting`]: a setting out of range, named by its recipe key
//!   (the binary turns the key into the flag or `cpack.toml` key to change).

pub mod error;
pub mod fsutil;
pub mod output;
pub mod progress;
pub mod setting;

pub use error::{Error, Result};
pub use output::{write_output, OutputTarget};
pub use progress::{Progress, Silent};
pub use setting::{require, InvalidSetting};

/// Seed of every random choice (sampling negatives, the training subset,
/// shuffling, dropout) unless `cpack.toml` or a flag says otherwise.
pub const DEFAULT_SEED: u64 = 42;
