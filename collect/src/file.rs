//! Small files replaced whole and durably, with a CRC-32 at their end: the
//! spill's cursor and the saved window of event ids.
//!
//! A write goes to `NAME.tmp`, is fsync'd, renamed over `NAME`, and the
//! directory is fsync'd, so a crash leaves either the old file or the new
//! one. A read checks the CRC and gives the bytes before it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `body` and its CRC-32, durably.
pub fn write_checked(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.write_all(&crc32fast::hash(body).to_le_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // `Path::parent` of a bare file name is the empty path: the current
    // directory, which `File::open` cannot open by that name.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The body of a file [`write_checked`] wrote; `None` when there is no
/// such file, an error of kind `InvalidData` when its CRC does not match.
pub fn read_checked(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(body) = bytes.len().checked_sub(4) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shorter than its checksum",
        ));
    };
    if crc32fast::hash(&bytes[..body]).to_le_bytes()[..] != bytes[body..] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    bytes.truncate(body);
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_file_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(read_checked(&path).expect("no file").is_none());
        write_checked(&path, b"hello").expect("write");
        assert_eq!(
            read_checked(&path).expect("read").as_deref(),
            Some(&b"hello"[..])
        );
        assert!(!dir.path().join("f.tmp").exists());
        let mut bytes = fs::read(&path).expect("read");
        bytes[0] ^= 1;
        fs::write(&path, &bytes).expect("write");
        let e = read_checked(&path).expect_err("damaged");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        fs::write(&path, b"abc").expect("write");
        assert_eq!(
            read_checked(&path).expect_err("short").kind(),
            io::ErrorKind::InvalidData
        );
    }
}
