//! The local journal: an append-only, fsync'd file of retry records that the
//! retry topic did not accept, resent later (also after a restart).
//!
//! Each record is framed as `0xF7, key length (u32 LE), value length (u32
//! LE), key, value, FNV-64 of key and value (u64 LE)`. A crash can leave a
//! torn last frame; reading stops at the first frame that is incomplete or
//! fails its checksum, and the next append truncates it away.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use footprint_dataflows::hash::Fnv;

const MAGIC: u8 = 0xF7;

/// One journaled record: Kafka key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// The journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    records: usize,
    valid_len: u64,
}

fn frame(buf: &mut Vec<u8>, k: &[u8], v: &[u8]) -> io::Result<()> {
    let kl = u32::try_from(k.len()).map_err(|_| io::Error::other("key too large"))?;
    let vl = u32::try_from(v.len()).map_err(|_| io::Error::other("value too large"))?;
    buf.push(MAGIC);
    buf.extend_from_slice(&kl.to_le_bytes());
    buf.extend_from_slice(&vl.to_le_bytes());
    buf.extend_from_slice(k);
    buf.extend_from_slice(v);
    buf.extend_from_slice(&checksum(k, v).to_le_bytes());
    Ok(())
}

/// The complete records of `data`, and how many bytes they take.
fn parse(data: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = data.get(pos..pos + 9) {
        if header[0] != MAGIC {
            break;
        }
        let kl = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let vl = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let start = pos + 9;
        let Some(body) = data.get(start..start + kl + vl + 8) else {
            break;
        };
        let (k, rest) = body.split_at(kl);
        let (v, sum) = rest.split_at(vl);
        let mut s = [0u8; 8];
        s.copy_from_slice(sum);
        if u64::from_le_bytes(s) != checksum(k, v) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
        pos = start + kl + vl + 8;
    }
    (out, pos)
}

fn checksum(key: &[u8], value: &[u8]) -> u64 {
    Fnv::default().write(key).write(value).finish()
}

impl Journal {
    /// Opens (or creates) the journal at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = Self::open_file(path)?;
        let mut j = Journal {
            path: path.to_owned(),
            file,
            records: 0,
            valid_len: 0,
        };
        let records = j.read_all()?;
        j.records = records.len();
        Ok(j)
    }

    /// Reads the complete records of the journal at `path` without taking it
    /// over (for inspection while a process owns it).
    pub fn peek(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(parse(&data).0)
    }

    fn open_file(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        // One process per journal: another one truncating it would lose records.
        file.try_lock().map_err(|_| {
            io::Error::other(format!(
                "journal {} is in use by another process; give each process its own retry.journal",
                path.display()
            ))
        })?;
        Ok(file)
    }

    /// Records in the journal.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the journal is empty.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends records and makes them durable (fsync) before returning.
    pub fn append(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        // Drop a torn tail left by a crash before appending after it.
        self.file.set_len(self.valid_len)?;
        self.file.seek(SeekFrom::End(0))?;
        let mut buf = Vec::new();
        for (k, v) in records {
            frame(&mut buf, k, v)?;
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.valid_len += buf.len() as u64;
        self.records += records.len();
        Ok(())
    }

    /// Every complete record, in order.
    pub fn read_all(&mut self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut data = Vec::new();
        self.file.read_to_end(&mut data)?;
        let (out, valid) = parse(&data);
        self.valid_len = valid as u64;
        Ok(out)
    }

    /// Replaces the journal's content with `records`, atomically: a crash
    /// leaves either the old content or the new one.
    pub fn rewrite(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let tmp = self.path.with_extension("rewrite");
        {
            let mut t = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&tmp)?;
            let mut buf = Vec::new();
            for (k, v) in records {
                frame(&mut buf, k, v)?;
            }
            t.write_all(&buf)?;
            t.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        self.file = Self::open_file(&self.path)?;
        let n = self.read_all()?.len();
        self.records = n;
        Ok(())
    }

    /// Empties the journal (after its records were resent), durably.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.valid_len = 0;
        self.records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j/retry.journal");
        let mut j = Journal::open(&path).expect("open");
        j.append(&[
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k2".to_vec(), b"v2".to_vec()),
        ])
        .expect("append");
        drop(j);
        // A crash mid-append leaves half a frame.
        let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
        f.write_all(&[MAGIC, 9, 0, 0, 0, 9, 0]).expect("torn write");
        drop(f);
        let mut j = Journal::open(&path).expect("open again");
        assert_eq!(j.len(), 2);
        j.append(&[(b"k3".to_vec(), b"v3".to_vec())])
            .expect("append after torn tail");
        let all = j.read_all().expect("read");
        assert_eq!(
            all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()]
        );
        j.clear().expect("clear");
        let err = Journal::open(&path).expect_err("a second owner is refused");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        assert_eq!(Journal::peek(&path).expect("peek").len(), 0);
        j.rewrite(&[(b"k4".to_vec(), b"v4".to_vec())])
            .expect("rewrite");
        drop(j);
        let j = Journal::open(&path).expect("open after the owner is gone");
        assert_eq!(j.len(), 1);
    }
}
