//! Generation ids: `gen-000003` on disk, a number in memory.

use serde::{Deserialize, Serialize};

/// One published build of an index, named `gen-NNNNNN` (its folder, and the
/// content of `CURRENT` while it is live). Numbers only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Generation(u64);

impl Generation {
    const PREFIX: &'static str = "gen-";

    /// The first generation an index publishes.
    pub const FIRST: Generation = Generation(1);

    /// The generation published after this one.
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:06}", Self::PREFIX, self.0)
    }
}

/// A name that is not `gen-` followed by a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a generation name (gen-NNNNNN)")]
pub struct NotAGeneration(pub String);

impl std::str::FromStr for Generation {
    type Err = NotAGeneration;
    fn from_str(s: &str) -> Result<Self, NotAGeneration> {
        s.strip_prefix(Self::PREFIX)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(Generation)
            .ok_or_else(|| NotAGeneration(s.to_string()))
    }
}

impl TryFrom<String> for Generation {
    type Error = NotAGeneration;
    fn try_from(s: String) -> Result<Self, NotAGeneration> {
        s.parse()
    }
}

impl From<Generation> for String {
    fn from(g: Generation) -> String {
        g.to_string()
    }
}

impl PartialEq<str> for Generation {
    fn eq(&self, other: &str) -> bool {
        other.parse() == Ok(*self)
    }
}

impl PartialEq<&str> for Generation {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        let g: Generation = "gen-000003".parse().unwrap();
        assert_eq!(g.to_string(), "gen-000003");
        assert_eq!(g.next(), "gen-000004");
        assert_eq!(
            "gen-1234567".parse::<Generation>().unwrap().to_string(),
            "gen-1234567"
        );
        for bad in ["gen-", "gen-x1", "gen--1", "gen-+1", "build", "", "gen-1 "] {
            assert!(bad.parse::<Generation>().is_err(), "{bad}");
        }
        assert!(Generation::FIRST < Generation::FIRST.next());
    }
}
