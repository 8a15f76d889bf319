//! Reading the files a plan names — the plan and its bases, ssh configs, known_hosts,
//! identity files — with bounds: each is opened without blocking (a FIFO does not hang
//! the open), must be a regular file (not a FIFO, a socket or a device such as
//! `/dev/zero`), and is read only up to a limit, so a wrong or hostile path costs little.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest ssh config file (each `Include`d file too) planrun reads. Real configs
/// are a few KB; a generated one for thousands of hosts is well under this.
pub const MAX_SSH_CONFIG_BYTES: u64 = 1024 * 1024;

/// The largest known_hosts file. One line is 100–750 bytes: this holds more than
/// 100,000 hosts' keys.
pub const MAX_KNOWN_HOSTS_BYTES: u64 = 64 * 1024 * 1024;

/// The largest private key file. An RSA 16384-bit key in PEM is ~12 KB.
pub const MAX_IDENTITY_BYTES: u64 = 1024 * 1024;

/// Why a file was not read.
#[derive(Debug)]
pub enum Refusal {
    Missing,
    Directory,
    /// A FIFO, a socket or a device.
    NotRegular,
    /// `size` is what the metadata says, when it says more than the limit.
    TooLarge {
        size: Option<u64>,
    },
    Io(io::Error),
}

/// A file that was not read, with its path and the limit it was read with.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub limit: u64,
    pub refusal: Refusal,
}

impl FileError {
    pub fn is_missing(&self) -> bool {
        matches!(self.refusal, Refusal::Missing)
    }
}

impl FileError {
    /// What is wrong, without the path: `it is a directory`.
    pub fn reason(&self) -> String {
        match &self.refusal {
            Refusal::Missing => "it does not exist".into(),
            Refusal::Directory => "it is a directory, not a file".into(),
            Refusal::NotRegular => {
                "it is not a regular file but a FIFO, a socket or a device; planrun reads only regular files".into()
            }
            Refusal::TooLarge { size: Some(size) } => {
                format!("it is {size} bytes, more than the {} planrun reads", size_text(self.limit))
            }
            Refusal::TooLarge { size: None } => format!("it is more than the {} planrun reads", size_text(self.limit)),
            Refusal::Io(e) => crate::text::lower_first(&e.to_string()),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read `{}`: {}", self.path.display(), self.reason())
    }
}

impl std::error::Error for FileError {}

/// `1 MiB`, `64 MiB`, `16 MiB`: how the README states the limits.
pub fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const KIB: u64 = 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Opens `path` for reading without blocking and checks, on the opened file (so a file
/// swapped after a check cannot slip through), that it is a regular file of at most
/// `limit` bytes.
pub fn open(path: &Path, limit: u64) -> Result<File, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |refusal| FileError { path: path.to_path_buf(), limit, refusal };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => error(Refusal::Missing),
            _ => error(Refusal::Io(e)),
        })?;
    let meta = file.metadata().map_err(|e| error(Refusal::Io(e)))?;
    if meta.is_dir() {
        return Err(error(Refusal::Directory));
    }
    if !meta.is_file() && !is_dev_null(&meta) {
        return Err(error(Refusal::NotRegular));
    }
    if meta.len() > limit {
        return Err(error(Refusal::TooLarge { size: Some(meta.len()) }));
    }
    Ok(file)
}

/// `/dev/null` (or a link to it) reads as an empty file: `config_file: /dev/null` and
/// `known_hosts: /dev/null` are how OpenSSH users say "none".
fn is_dev_null(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
}

/// Reads a regular file of at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let file = open(path, limit)?;
    let error = |refusal| FileError { path: path.to_path_buf(), limit, refusal };
    // Bounded even if the file grows after the check.
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| error(Refusal::Io(e)))?;
    if bytes.len() as u64 > limit {
        return Err(error(Refusal::TooLarge { size: None }));
    }
    Ok(bytes)
}

/// Reads a regular UTF-8 text file of at most `limit` bytes.
pub fn read_to_string(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|_| FileError {
        path: path.to_path_buf(),
        limit,
        refusal: Refusal::Io(io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text")),
    })
}

/// Checks that a file a library will open itself (by path) is a regular file of at most
/// `limit` bytes; a missing file is the caller's to judge.
pub fn check(path: &Path, limit: u64) -> Result<(), FileError> {
    open(path, limit).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_directories_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let zero = read(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(matches!(zero.refusal, Refusal::NotRegular), "{zero}");
        assert!(zero.to_string().starts_with("cannot read `/dev/zero`: it is not a regular file"), "{zero}");

        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(matches!(read(&fifo, 1024).unwrap_err().refusal, Refusal::NotRegular));

        assert!(matches!(read(dir.path(), 1024).unwrap_err().refusal, Refusal::Directory));

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let e = read(&big, 1024).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot read `{}`: it is 2048 bytes, more than the 1 KiB planrun reads", big.display())
        );

        assert_eq!(read(Path::new("/dev/null"), 1024).unwrap(), b"");
        assert!(read(&dir.path().join("none"), 1024).unwrap_err().is_missing());
        std::fs::write(&big, b"fits").unwrap();
        assert_eq!(read(&big, 1024).unwrap(), b"fits");
    }
}
