//! Files pgshift writes: atomic replacement, sha256, timestamped run directories, and write errors
//! explained (full disk, read-only filesystem, permissions) with their fix.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::UserError;

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old file or
/// the whole new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = partial_path(path);
    let result = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates (or truncates) a file readable by its owner only: backups hold the whole database.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// `file.partial`: where a file is written before it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Makes a rename in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// A temporary file (0600, in TMPDIR) holding `contents`, removed when dropped: list files handed
/// to pg_restore, the filtered roles script.
pub fn temp_file(prefix: &str, contents: &[u8]) -> Result<tempfile::NamedTempFile, UserError> {
    let mut file = tempfile::Builder::new().prefix(prefix).tempfile().map_err(|e| {
        UserError::new(format!("cannot create a temporary file: {e}"), "check TMPDIR and its free space")
    })?;
    file.write_all(contents).and_then(|_| file.flush()).map_err(|e| write_error(file.path(), &e))?;
    Ok(file)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Creates `base/<UTC timestamp>/` (mode 0700; `base` too if needed); a second run in the same
/// second gets a suffix. Errors say why the directory cannot be written and what to do.
pub fn create_run_dir(base: &Path) -> Result<PathBuf, UserError> {
    std::fs::create_dir_all(base).map_err(|e| write_error(base, &e))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    for n in 0..100 {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}-{n}") };
        let dir = base.join(name);
        let made = {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)
        };
        match made {
            Ok(()) => {
                // probe: a directory can be created yet refuse files (quota, some mounts)
                let probe = dir.join(".write-test");
                std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe)).map_err(|e| {
                    let _ = std::fs::remove_dir(&dir);
                    write_error(&dir, &e)
                })?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_error(base, &e)),
        }
    }
    Err(UserError::new(
        format!("cannot create a new run directory in {}", base.display()),
        "remove old run directories or choose another --dir",
    ))
}

/// A write failure as one line with its fix.
pub fn write_error(path: &Path, e: &std::io::Error) -> UserError {
    let what = path.display();
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => UserError::new(
            format!("no space left writing {what}"),
            "free space on that filesystem or choose a --dir on a larger one",
        ),
        Some(nix::libc::EROFS) => UserError::new(
            format!("cannot write {what}: the filesystem is read-only"),
            "choose a --dir on a writable filesystem",
        ),
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => UserError::new(
            format!("cannot write {what}: permission denied"),
            "choose a --dir you can write to, or fix its owner and mode",
        ),
        Some(nix::libc::ENOTDIR) | Some(nix::libc::EEXIST) => UserError::new(
            format!("cannot use {what} as a directory: a file is in the way"),
            "choose another --dir, or move that file away",
        ),
        _ => UserError::new(format!("cannot write {what}: {e}"), "check the directory, its permissions and free space"),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_partial_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!partial_path(&p).exists());
        let (n, sum) = sha256_file(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(sum, "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3");
    }

    #[test]
    fn run_dirs_are_distinct_and_a_file_in_the_way_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let a = create_run_dir(dir.path()).unwrap();
        let b = create_run_dir(dir.path()).unwrap();
        assert_ne!(a, b);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = create_run_dir(&file.join("sub")).unwrap_err();
        assert!(e.message.contains("a file is in the way"), "{e}");
    }
}
