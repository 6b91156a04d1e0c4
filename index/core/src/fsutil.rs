//! Crash-safe file writes: temp file, fsync, rename, fsync of the directory.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that a reader sees either the old content or the
/// new one, never a torn file, whatever moment the process dies at.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, bytes, None)
}

/// [`atomic_write`], giving the new file `permissions` (those of the file it
/// replaces, for outputs the user named) instead of the defaults.
pub fn atomic_write_with(
    path: &Path,
    bytes: &[u8],
    permissions: Option<fs::Permissions>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Some(permissions) = permissions {
            f.set_permissions(permissions)?;
        }
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("rename into place", path)(e));
    }
    sync_dir(dir)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(Error::io("read", path))
}

/// Reads a JSON file into `T`, naming the file in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as pretty JSON atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serialising plain data cannot fail");
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

/// An advisory lock (`flock`) on a file that names its holder: held until
/// dropped, released by the kernel if the process dies.
pub struct ProcessLock {
    _file: File,
}

impl ProcessLock {
    /// Takes the lock at `path` without waiting, writing this process's id
    /// into the file; if another process holds it, the error names `what`
    /// and that process's id.
    pub fn acquire(path: &Path, what: &'static str) -> Result<Self> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io("open", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(Error::InUse {
                    what,
                    path: path.to_path_buf(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", path)(e)),
        }
        file.set_len(0)
            .and_then(|_| write!(file, "{}", std::process::id()))
            .and_then(|_| file.flush())
            .map_err(Error::io("write", path))?;
        Ok(ProcessLock { _file: file })
    }
}

/// Size and CRC-32 of a file, recorded when it is written and compared when
/// it is read back: a flipped, truncated or swapped file is caught before
/// anything uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub crc32: u32,
}

impl FileSum {
    /// Reads `path` through once.
    pub fn of(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = File::open(path).map_err(Error::io("open", path))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buffer).map_err(Error::io("read", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bytes += n as u64;
        }
        Ok(FileSum {
            bytes,
            crc32: hasher.finalize(),
        })
    }

    /// Fails unless `path` still has this size and checksum; the error says
    /// which file and how to get a good one back (`recovery`).
    pub fn verify(&self, path: &Path, recovery: &str) -> Result<()> {
        let found = FileSum::of(path)?;
        if found == *self {
            return Ok(());
        }
        let problem = if found.bytes != self.bytes {
            format!("is {} bytes, {} were written", found.bytes, self.bytes)
        } else {
            format!("does not match the checksum recorded when it was written (crc32 {:08x}, expected {:08x})", found.crc32, self.crc32)
        };
        Err(Error::BadFile {
            path: path.to_path_buf(),
            problem: format!("{problem}: the file is damaged; {recovery}"),
        })
    }
}
