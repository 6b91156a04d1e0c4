//! Where a command's output goes when the user names a path (`-o FILE`,
//! `--png FILE`, `OUT.onnx`). Every output a command writes passes through
//! [`write_output`], so all of them treat odd targets alike:
//!
//! - `-` is standard output;
//! - a regular file, or a path that does not exist yet, is replaced
//!   atomically (temp file beside it, fsync, rename): a reader never sees a
//!   torn file, and a failed write leaves the old one;
//! - a symlink is followed and its target treated by these rules, so the
//!   link stays a link;
//! - a FIFO or a character device (`/dev/stdout`, `/dev/null`, a named
//!   pipe) is written through: renaming over it would replace the node
//!   with a regular file, which is never what was meant;
//! - anything under `/dev` or `/proc` is written through too, never replaced
//!   (`/dev/stdout` is a link into `/proc/self/fd`, whose targets are not
//!   paths);
//! - a directory, a block device or a socket is refused with one line.

use crate::error::{Error, Result};
use crate::fsutil;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Symlinks followed before giving up (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// How an output path is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// `-`: standard output.
    Stdout,
    /// A regular file (or a new one) replaced atomically; the path is the
    /// one written after following symlinks.
    Replace(PathBuf),
    /// A FIFO, a character device or a path under `/dev` or `/proc`:
    /// opened and written in place.
    Through(PathBuf),
}

/// Why an output path cannot be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    Directory,
    BlockDevice,
    Socket,
    LinkLoop,
}

impl Unwritable {
    fn describe(self) -> &'static str {
        match self {
            Unwritable::Directory => "is a directory; name a file inside it",
            Unwritable::BlockDevice => "is a block device; cpack does not write disks, name a file",
            Unwritable::Socket => "is a socket; name a file, or `-` for standard output",
            Unwritable::LinkLoop => "is a loop of symlinks (or one too deep to follow)",
        }
    }
}

impl OutputTarget {
    /// Decides how `path` is written, following symlinks.
    pub fn resolve(path: &Path) -> Result<Self> {
        if path.as_os_str() == "-" || names_stdout(&lexical(path)) {
            return Ok(OutputTarget::Stdout);
        }
        if is_system_path(&lexical(path)) {
            return through_checked(&lexical(path));
        }
        let mut current = path.to_path_buf();
        for _ in 0..MAX_LINK_HOPS {
            let meta = match fs::symlink_metadata(&current) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(OutputTarget::Replace(current));
                }
                Err(e) => return Err(Error::io("inspect", &current)(e)),
                Ok(meta) => meta,
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                let link = fs::read_link(&current).map_err(Error::io("read link", &current))?;
                current = lexical(&match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                });
                if names_stdout(&current) {
                    return Ok(OutputTarget::Stdout);
                }
                if is_system_path(&current) {
                    return through_checked(&current);
                }
                continue;
            }
            return classify(kind, current);
        }
        Err(unwritable(path, Unwritable::LinkLoop))
    }

    /// Writes `bytes` to the target.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        match self {
            OutputTarget::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(Error::io("write", "standard output"))
            }
            OutputTarget::Replace(path) => replace(path, bytes),
            OutputTarget::Through(path) => {
                // A regular file reached this way (another process's fd
                // in /proc) starts over; devices and FIFOs cannot be truncated.
                let is_file = fs::metadata(path).is_ok_and(|m| m.is_file());
                let mut file = OpenOptions::new()
                    .write(true)
                    .truncate(is_file)
                    .open(path)
                    .map_err(Error::io("open for writing", path))?;
                file.write_all(bytes)
                    .and_then(|()| file.flush())
                    .map_err(Error::io("write", path))
            }
        }
    }

    /// The path written, for "wrote …" lines (`None` for standard output).
    pub fn path(&self) -> Option<&Path> {
        match self {
            OutputTarget::Stdout => None,
            OutputTarget::Replace(path) | OutputTarget::Through(path) => Some(path),
        }
    }
}

/// Writes `bytes` to the output path `path` as [`OutputTarget`] says, and
/// returns where they went.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<OutputTarget> {
    let target = OutputTarget::resolve(path)?;
    target.write(bytes)?;
    Ok(target)
}

/// `path` with `.` and `..` resolved by name (symlinks are followed one
/// hop at a time by the caller), so `../../proc/self/fd/1` is seen as
/// the `/proc` path it is.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The names of this process's standard output: writing there means
/// writing to stdout as it is (appending to a file opened with `>>`
/// included), never reopening it.
fn names_stdout(path: &Path) -> bool {
    ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"]
        .iter()
        .any(|name| path == Path::new(name))
}

/// Device nodes and the kernel's views: never renamed over.
fn is_system_path(path: &Path) -> bool {
    path.is_absolute() && (path.starts_with("/dev") || path.starts_with("/proc"))
}

/// A system path is written through when it leads to a device or a FIFO;
/// a regular file there (a tmpfs such as `/dev/shm`) is replaced like any
/// file, and so is a new one.
fn through_checked(path: &Path) -> Result<OutputTarget> {
    match fs::metadata(path) {
        Ok(meta) => match classify(meta.file_type(), path.to_path_buf())? {
            OutputTarget::Replace(p) => match fs::canonicalize(&p) {
                Ok(real) => Ok(OutputTarget::Replace(real)),
                // A link into /proc whose target is no path (`pipe:[…]`).
                Err(_) => Ok(OutputTarget::Through(p)),
            },
            target => Ok(target),
        },
        Err(_) => Ok(OutputTarget::Replace(path.to_path_buf())),
    }
}

fn classify(kind: fs::FileType, path: PathBuf) -> Result<OutputTarget> {
    let refuse = |why| Err(unwritable(&path, why));
    if kind.is_file() {
        Ok(OutputTarget::Replace(path))
    } else if kind.is_dir() {
        refuse(Unwritable::Directory)
    } else if kind.is_block_device() {
        refuse(Unwritable::BlockDevice)
    } else if kind.is_socket() {
        refuse(Unwritable::Socket)
    } else {
        // FIFOs and character devices.
        Ok(OutputTarget::Through(path))
    }
}

fn unwritable(path: &Path, why: Unwritable) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        problem: format!("cannot write output here: it {}", why.describe()),
    }
}

/// Atomic replace that keeps the permissions of the file it replaces.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let mode = fs::metadata(path).ok().map(|m| m.permissions());
    fsutil::atomic_write_with(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn regular_files_and_new_paths_are_replaced_and_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.txt");
        assert_eq!(
            OutputTarget::resolve(&file).unwrap(),
            OutputTarget::Replace(file.clone())
        );
        fs::write(&file, "old").unwrap();
        let link = dir.path().join("link");
        symlink("out.txt", &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&file).unwrap(), "new");
        let dangling = dir.path().join("dangling");
        symlink("made.txt", &dangling).unwrap();
        write_output(&dangling, b"x").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("made.txt")).unwrap(),
            "x"
        );
    }

    #[test]
    fn stdout_by_any_name_is_stdout_and_dot_dots_are_resolved() {
        for name in [
            "/dev/stdout",
            "/dev/fd/1",
            "/proc/self/fd/1",
            "/dev/../dev/stdout",
        ] {
            assert_eq!(
                OutputTarget::resolve(Path::new(name)).unwrap(),
                OutputTarget::Stdout,
                "{name}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out");
        let depth = dir.path().components().count() - 1;
        let up = "../".repeat(depth);
        symlink(format!("{up}proc/self/fd/1"), &link).unwrap();
        assert_eq!(OutputTarget::resolve(&link).unwrap(), OutputTarget::Stdout);
    }

    #[test]
    fn a_regular_file_under_dev_is_replaced_whole() {
        // /dev/shm: the tmpfs every Linux has, where users put scratch files.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let file = dir.path().join("out.json");
        fs::write(&file, "a much longer old content").unwrap();
        write_output(&file, b"new").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new");
        let fresh = dir.path().join("fresh.json");
        write_output(&fresh, b"made").unwrap();
        assert_eq!(fs::read_to_string(&fresh).unwrap(), "made");
    }

    #[test]
    fn devices_are_written_through_and_directories_refused() {
        assert_eq!(
            OutputTarget::resolve(Path::new("/dev/null")).unwrap(),
            OutputTarget::Through("/dev/null".into())
        );
        let full = write_output(Path::new("/dev/full"), b"x").unwrap_err();
        assert!(full.to_string().contains("/dev/full"), "{full}");
        assert!(fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
        let dir = tempfile::tempdir().unwrap();
        let err = OutputTarget::resolve(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let looped = dir.path().join("loop");
        symlink("loop", &looped).unwrap();
        let err = OutputTarget::resolve(&looped).unwrap_err();
        assert!(err.to_string().contains("loop of symlinks"), "{err}");
    }
}
