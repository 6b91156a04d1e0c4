//! cpack-core: the small vocabulary every cpack library shares.
//!
//! - [`fsutil`]: crash-safe writes (temp file, fsync, rename, directory
//!   fsync), JSON files read with their path in the error, size + CRC-32
//!   checksums recorded at write time and verified at read time, and a
//!   `flock` that names the process holding it.
//! - [`progress`]: how long-running library work reports stages and counts
//!   without knowing about terminals (the binary draws the bars).
//! - [`Error`]: file errors that name the file and what was being done.

pub mod error;
pub mod fsutil;
pub mod progress;

pub use error::{Error, Result};
pub use progress::{Progress, Silent};
