//! The local spill: where an accepted event waits, durable, while Kafka
//! cannot take it.
//!
//! # Layout
//! A directory of segment files, `NNNNNNNNNNNNNNNNNNNN.seg` (a sequence
//! number in 20 digits, so that names sort as numbers), and a `cursor`
//! file. A segment is a run of records, each
//! - its body's length (`u32`, little-endian),
//! - the CRC-32 of its body (`u32`, little-endian),
//! - the body: the key's length (`u16`, little-endian), the key, the value.
//!
//! `cursor` holds the [`Position`] of the first record not yet drained
//! (two `u64`, little-endian) and their CRC-32.
//!
//! # Durability
//! - [`Spill::append`] writes a batch at the end of the newest segment and
//!   fsyncs it (and the directory, when it began a segment) before it
//!   returns: once it returns `Ok`, the batch survives a crash, and only
//!   then may the events be acknowledged. A batch that does not fit in
//!   `max_bytes` is refused whole, with [`SpillError::Full`].
//! - [`Spill::commit`] records how far the records were drained: the
//!   cursor is written to `cursor.tmp`, fsync'd and renamed over `cursor`,
//!   and the directory fsync'd. Segments wholly before it are deleted.
//! - A crash after Kafka acknowledged drained records but before the
//!   commit leaves them behind the cursor, so they are drained again: the
//!   one way a spilled event reaches Kafka twice.
//!
//! # Recovery
//! [`Spill::open`] checks every segment from the cursor on, record by
//! record:
//! - a record cut short at the end of a segment (a crash during an append,
//!   which therefore never returned and was never acknowledged) is cut off;
//! - a record whose checksum fails (the disk changed it) ends the valid
//!   part of its segment: the rest is moved aside to `NNNN.seg.corrupt`
//!   for an operator, counted in [`Recovered`], and not drained.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before a record's body: its length and its checksum.
const HEADER: u64 = 8;

/// The longest record body [`Spill::append`] takes: a damaged length
/// field read back never asks for more memory than this.
const MAX_RECORD: usize = 64 << 20;

/// Where a record begins (or the spill ends): a segment and a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The segment's sequence number.
    pub segment: u64,
    /// The byte offset in it.
    pub offset: u64,
}

/// One spilled event: the Kafka key and value it will be produced with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Kafka key.
    pub key: Vec<u8>,
    /// The Kafka value.
    pub value: Vec<u8>,
}

/// What [`Spill::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Records waiting to be drained.
    pub records: u64,
    /// Their bytes, as stored.
    pub bytes: u64,
    /// Bytes of records cut short at a segment's end, cut off.
    pub torn_bytes: u64,
    /// Bytes from a record whose checksum failed to its segment's end,
    /// moved aside to a `.corrupt` file.
    pub corrupt_bytes: u64,
}

/// Why the spill could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// A file operation failed.
    #[error("spill {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The batch does not fit in `max_bytes`.
    #[error(
        "the spill is full: {used} of {max} bytes in use, a batch of {asked} bytes does not fit"
    )]
    Full {
        /// Bytes waiting to be drained.
        used: u64,
        /// The limit.
        max: u64,
        /// The batch's bytes.
        asked: u64,
    },
    /// A key longer than a record can carry.
    #[error("a key of {0} bytes cannot be spilled; at most 65,535 are allowed")]
    KeyTooLong(usize),
    /// A position that is not between the cursor and the end.
    #[error("position {asked:?} is outside the spill (cursor {cursor:?}, end {end:?})")]
    OutOfRange {
        /// What was asked.
        asked: Position,
        /// The cursor.
        cursor: Position,
        /// The end.
        end: Position,
    },
    /// An append failed and its partial bytes could not be cut off: no
    /// more appends until the spill is opened again (which cuts them off).
    #[error("an earlier append could not be undone; reopen the spill")]
    Broken,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpillError + '_ {
    move |source| SpillError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spill of one collector process.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Every segment from the cursor's on, and its valid length.
    segments: BTreeMap<u64, u64>,
    /// The newest segment, open for appends.
    head: Option<File>,
    cursor: Position,
    broken: bool,
}

impl Spill {
    /// Opens (or creates) the spill in `dir`, holding at most `max_bytes`
    /// waiting to be drained, in segments of about `segment_bytes`, and
    /// recovers what a crash left.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spill, Recovered), SpillError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let cursor_path = dir.join("cursor");
        let saved = read_cursor(&cursor_path)?;
        let mut found: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push(seq);
        }
        found.sort_unstable();
        let cursor = match saved {
            Some(c) => c,
            None => Position {
                segment: found.first().copied().unwrap_or(0),
                offset: 0,
            },
        };
        let mut recovered = Recovered::default();
        let mut segments = BTreeMap::new();
        for seq in found {
            let path = segment_path(dir, seq);
            if seq < cursor.segment {
                // Drained; a crash came between the cursor and the delete.
                fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let from = if seq == cursor.segment {
                cursor.offset
            } else {
                0
            };
            let scan = scan(&path, from)?;
            if scan.torn > 0 || scan.corrupt > 0 {
                cut(&path, seq, scan.valid, scan.corrupt > 0)?;
                tracing::warn!(segment = %path.display(), torn_bytes = scan.torn, corrupt_bytes = scan.corrupt,
                    "the spill cut off what an interrupted append or a damaged disk left");
            }
            recovered.torn_bytes += scan.torn;
            recovered.corrupt_bytes += scan.corrupt;
            let start = if seq == cursor.segment {
                if !scan.boundaries.contains(&cursor.offset) {
                    return Err(SpillError::OutOfRange {
                        asked: cursor,
                        cursor,
                        end: Position {
                            segment: seq,
                            offset: scan.valid,
                        },
                    });
                }
                cursor.offset
            } else {
                0
            };
            recovered.records += scan.boundaries.iter().filter(|b| **b > start).count() as u64;
            recovered.bytes += scan.valid - start;
            segments.insert(seq, scan.valid);
        }
        let head = match segments.last_key_value() {
            Some((seq, _)) => {
                let path = segment_path(dir, *seq);
                Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(io_at(&path))?,
                )
            }
            None => None,
        };
        let spill = Spill {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: segment_bytes.max(HEADER + 2),
            segments,
            head,
            cursor,
            broken: false,
        };
        Ok((spill, recovered))
    }

    /// The first record not yet drained.
    pub fn cursor(&self) -> Position {
        self.cursor
    }

    /// Where the next append goes.
    pub fn end(&self) -> Position {
        match self.segments.last_key_value() {
            Some((seq, len)) => Position {
                segment: *seq,
                offset: *len,
            },
            None => self.cursor,
        }
    }

    /// Whether every record was drained.
    pub fn is_empty(&self) -> bool {
        self.bytes() == 0
    }

    /// Bytes waiting to be drained.
    pub fn bytes(&self) -> u64 {
        let stored: u64 = self.segments.values().sum();
        let behind = if self.segments.contains_key(&self.cursor.segment) {
            self.cursor.offset
        } else {
            0
        };
        stored.saturating_sub(behind)
    }

    /// The most bytes it may hold.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends `records` after every record before them and makes them
    /// durable; all of them or, on an error, none.
    pub fn append(&mut self, records: &[Record]) -> Result<Position, SpillError> {
        if self.broken {
            return Err(SpillError::Broken);
        }
        let mut buf = Vec::new();
        for r in records {
            encode(r, &mut buf)?;
        }
        let asked = buf.len() as u64;
        if self.bytes() + asked > self.max_bytes {
            return Err(SpillError::Full {
                used: self.bytes(),
                max: self.max_bytes,
                asked,
            });
        }
        if asked == 0 {
            return Ok(self.end());
        }
        let (seq, len) = match self.segments.last_key_value() {
            Some((seq, len)) if *len < self.segment_bytes && self.head.is_some() => (*seq, *len),
            last => {
                let seq = last.map_or(self.cursor.segment, |(s, _)| s + 1);
                self.begin(seq)?;
                (seq, 0)
            }
        };
        let path = segment_path(&self.dir, seq);
        let Some(head) = self.head.as_mut() else {
            return Err(SpillError::Broken);
        };
        let written = head.write_all(&buf).and_then(|()| head.sync_data());
        if let Err(e) = written {
            // Cut the partial batch off, or no later append may follow it.
            if head.set_len(len).and_then(|()| head.sync_data()).is_err() {
                self.broken = true;
            }
            return Err(SpillError::Io { path, source: e });
        }
        let end = len + asked;
        self.segments.insert(seq, end);
        Ok(Position {
            segment: seq,
            offset: end,
        })
    }

    /// Begins segment `seq` and makes its name durable.
    fn begin(&mut self, seq: u64) -> Result<(), SpillError> {
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        if let Err(e) = sync_dir(&self.dir) {
            // Not recorded: take it away, or the next append could not
            // begin the segment again.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.segments.insert(seq, 0);
        self.head = Some(file);
        Ok(())
    }

    /// Up to `max` records from `from` (a position [`read`](Self::read) or
    /// [`cursor`](Self::cursor) gave), in order, each with the position
    /// after it.
    pub fn read(&self, from: Position, max: usize) -> Result<Vec<(Record, Position)>, SpillError> {
        let end = self.end();
        if from < self.cursor || from > end {
            return Err(SpillError::OutOfRange {
                asked: from,
                cursor: self.cursor,
                end,
            });
        }
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < max {
            let Some(len) = self.segments.get(&at.segment).copied() else {
                break;
            };
            if at.offset >= len {
                match self.segments.range(at.segment + 1..).next() {
                    Some((next, _)) => {
                        at = Position {
                            segment: *next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let path = segment_path(&self.dir, at.segment);
            let mut file = BufReader::new(File::open(&path).map_err(io_at(&path))?);
            file.seek(SeekFrom::Start(at.offset))
                .map_err(io_at(&path))?;
            while out.len() < max && at.offset < len {
                let (record, size) =
                    read_record(&mut file)
                        .map_err(io_at(&path))?
                        .ok_or_else(|| SpillError::Io {
                            path: path.clone(),
                            source: io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("no whole record at offset {}", at.offset),
                            ),
                        })?;
                at.offset += size;
                out.push((record, at));
            }
        }
        Ok(out)
    }

    /// Records that everything before `to` was drained (Kafka holds it),
    /// durably, and deletes the segments wholly before it.
    pub fn commit(&mut self, to: Position) -> Result<(), SpillError> {
        let end = self.end();
        let boundary = to == end
            || self
                .segments
                .get(&to.segment)
                .is_some_and(|len| to.offset <= *len);
        if to < self.cursor || to > end || !boundary {
            return Err(SpillError::OutOfRange {
                asked: to,
                cursor: self.cursor,
                end,
            });
        }
        let path = self.dir.join("cursor");
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&to.segment.to_le_bytes());
        bytes.extend_from_slice(&to.offset.to_le_bytes());
        crate::file::write_checked(&path, &bytes).map_err(io_at(&path))?;
        self.cursor = to;
        let drained: Vec<u64> = self.segments.range(..to.segment).map(|(s, _)| *s).collect();
        for seq in drained {
            let p = segment_path(&self.dir, seq);
            fs::remove_file(&p).map_err(io_at(&p))?;
            self.segments.remove(&seq);
        }
        Ok(())
    }
}

/// The bytes `record` takes in a segment: an append of a batch ends this
/// much after where its first record begins, summed over the batch.
pub fn stored_len(record: &Record) -> u64 {
    HEADER + 2 + record.key.len() as u64 + record.value.len() as u64
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), SpillError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn encode(r: &Record, out: &mut Vec<u8>) -> Result<(), SpillError> {
    let key_len = u16::try_from(r.key.len()).map_err(|_| SpillError::KeyTooLong(r.key.len()))?;
    let body_len = 2 + r.key.len() + r.value.len();
    if body_len > MAX_RECORD {
        return Err(SpillError::Io {
            path: PathBuf::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "a record over 64 MiB"),
        });
    }
    let body_len = u32::try_from(body_len).map_err(|_| SpillError::Io {
        path: PathBuf::new(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "a record over 4 GiB"),
    })?;
    let start = out.len();
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&r.key);
    out.extend_from_slice(&r.value);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One record and its size as stored; `None` at a clean end of the file.
/// A short or damaged record is an `InvalidData` error.
fn read_record(r: &mut impl Read) -> io::Result<Option<(Record, u64)>> {
    let mut header = [0u8; HEADER as usize];
    match read_full(r, &mut header)? {
        0 => return Ok(None),
        n if n < header.len() => return Err(invalid("a record header cut short")),
        _ => {}
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Err(invalid("a record longer than any the spill writes"));
    }
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? < len {
        return Err(invalid("a record body cut short"));
    }
    if crc32fast::hash(&body) != crc || len < 2 {
        return Err(invalid("a record whose checksum fails"));
    }
    let key_len = usize::from(u16::from_le_bytes([body[0], body[1]]));
    if 2 + key_len > len {
        return Err(invalid("a record whose key is longer than it"));
    }
    let value = body.split_off(2 + key_len);
    let key = body.split_off(2);
    Ok(Some((Record { key, value }, HEADER + len as u64)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a segment holds: where its whole, sound records begin and end,
/// and what follows them.
struct Scan {
    /// Offsets of record boundaries: 0, then the end of each record.
    boundaries: Vec<u64>,
    /// The end of the last sound record.
    valid: u64,
    /// Bytes of a record cut short at the end.
    torn: u64,
    /// Bytes from a damaged record on.
    corrupt: u64,
}

/// Checks a segment's records from `from` (the cursor, in its segment:
/// what is before it was drained and is not read again).
fn scan(path: &Path, from: u64) -> Result<Scan, SpillError> {
    let bytes = fs::read(path).map_err(io_at(path))?;
    let total = bytes.len() as u64;
    if from > total {
        return Ok(Scan {
            boundaries: Vec::new(),
            valid: total,
            torn: 0,
            corrupt: 0,
        });
    }
    let mut boundaries = vec![from];
    let mut at = from as usize;
    loop {
        if at == bytes.len() {
            break;
        }
        let rest = &bytes[at..];
        if rest.len() < HEADER as usize {
            return Ok(Scan {
                boundaries,
                valid: at as u64,
                torn: total - at as u64,
                corrupt: 0,
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body_end = HEADER as usize + len;
        if rest.len() < body_end {
            // Cut short at the end of the file: an interrupted append.
            return Ok(Scan {
                boundaries,
                valid: at as u64,
                torn: total - at as u64,
                corrupt: 0,
            });
        }
        let body = &rest[HEADER as usize..body_end];
        let key_fits = len >= 2 && 2 + usize::from(u16::from_le_bytes([body[0], body[1]])) <= len;
        if crc32fast::hash(body) != crc || !key_fits {
            return Ok(Scan {
                boundaries,
                valid: at as u64,
                torn: 0,
                corrupt: total - at as u64,
            });
        }
        at += body_end;
        boundaries.push(at as u64);
    }
    Ok(Scan {
        valid: total,
        boundaries,
        torn: 0,
        corrupt: 0,
    })
}

/// Cuts segment `seq` at `valid`, moving what follows aside first when it
/// is damaged.
fn cut(path: &Path, seq: u64, valid: u64, keep_rest: bool) -> Result<(), SpillError> {
    if keep_rest {
        let bytes = fs::read(path).map_err(io_at(path))?;
        let mut aside = path.with_file_name(format!("{seq:020}.seg.corrupt"));
        let mut n = 1;
        while aside.exists() {
            aside = path.with_file_name(format!("{seq:020}.seg.corrupt.{n}"));
            n += 1;
        }
        let rest = bytes.get(valid as usize..).unwrap_or_default();
        let mut f = File::create(&aside).map_err(io_at(&aside))?;
        f.write_all(rest).map_err(io_at(&aside))?;
        f.sync_all().map_err(io_at(&aside))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_at(path))?;
    f.set_len(valid).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn read_cursor(path: &Path) -> Result<Option<Position>, SpillError> {
    let damaged = |source| SpillError::Io {
        path: path.to_owned(),
        source,
    };
    let Some(bytes) = crate::file::read_checked(path).map_err(damaged)? else {
        return Ok(None);
    };
    if bytes.len() != 16 {
        return Err(damaged(invalid("the cursor file is damaged")));
    }
    let mut seg = [0u8; 8];
    let mut off = [0u8; 8];
    seg.copy_from_slice(&bytes[..8]);
    off.copy_from_slice(&bytes[8..16]);
    Ok(Some(Position {
        segment: u64::from_le_bytes(seg),
        offset: u64::from_le_bytes(off),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            key: format!("app{}:u{}", i % 3, i % 7).into_bytes(),
            value: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    fn drain(spill: &mut Spill) -> Vec<Record> {
        let mut out = Vec::new();
        loop {
            let got = spill.read(spill.cursor(), 7).expect("read");
            let Some((_, last)) = got.last() else {
                return out;
            };
            let last = *last;
            out.extend(got.into_iter().map(|(r, _)| r));
            spill.commit(last).expect("commit");
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopens() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut s, rec0) = Spill::open(dir.path(), 1 << 20, 200).expect("open");
        assert_eq!(rec0, Recovered::default());
        let all: Vec<Record> = (0..100).map(rec).collect();
        for chunk in all.chunks(9) {
            s.append(chunk).expect("append");
        }
        assert!(s.segments.len() > 3, "small segments roll over");
        // Drain a part, then reopen: the rest is still there, in order.
        let first = s.read(s.cursor(), 30).expect("read");
        let at = first.last().expect("30 records").1;
        s.commit(at).expect("commit");
        drop(s);
        let (mut s, rec1) = Spill::open(dir.path(), 1 << 20, 200).expect("reopen");
        assert_eq!(rec1.records, 70);
        assert_eq!(rec1.torn_bytes + rec1.corrupt_bytes, 0);
        let rest = drain(&mut s);
        assert_eq!(rest, all[30..].to_vec());
        assert!(s.is_empty());
        // Only the newest segment is left once everything is drained.
        assert_eq!(s.segments.len(), 1);
    }

    #[test]
    fn an_append_cut_short_by_a_crash_is_cut_off_and_appends_go_on() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        s.append(&[rec(1), rec(2)]).expect("append");
        let seg = segment_path(dir.path(), s.end().segment);
        drop(s);
        // Half a record: what a crash during a write leaves.
        let mut extra = Vec::new();
        encode(&rec(3), &mut extra).expect("encode");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("seg");
        f.write_all(&extra[..extra.len() / 2]).expect("write");
        drop(f);
        let (mut s, rec) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
        assert_eq!(rec.records, 2);
        assert_eq!(rec.torn_bytes, (extra.len() / 2) as u64);
        s.append(&[self::rec(4)]).expect("append after");
        assert_eq!(
            drain(&mut s),
            vec![self::rec(1), self::rec(2), self::rec(4)]
        );
    }

    #[test]
    fn a_damaged_record_ends_its_segment_and_the_rest_is_kept_aside() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        s.append(&[rec(1)]).expect("append");
        let after_first = s.end().offset;
        s.append(&[rec(2), rec(3)]).expect("append");
        let seg = segment_path(dir.path(), s.end().segment);
        drop(s);
        let mut bytes = fs::read(&seg).expect("read");
        let i = after_first as usize + HEADER as usize + 3;
        bytes[i] ^= 0xFF;
        fs::write(&seg, &bytes).expect("write");
        let (mut s, rec) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
        assert_eq!(rec.records, 1);
        assert_eq!(rec.corrupt_bytes, bytes.len() as u64 - after_first);
        let aside = seg.with_file_name(format!("{:020}.seg.corrupt", s.end().segment));
        assert_eq!(
            fs::read(aside).expect("aside").len() as u64,
            rec.corrupt_bytes
        );
        assert_eq!(drain(&mut s), vec![self::rec(1)]);
    }

    #[test]
    fn damage_behind_the_cursor_is_not_read_again_and_cuts_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        s.append(&[rec(1)]).expect("append");
        let after_first = s.end();
        s.append(&[rec(2), rec(3)]).expect("append");
        s.commit(after_first).expect("commit");
        let seg = segment_path(dir.path(), s.end().segment);
        drop(s);
        // The drained record is damaged: nothing waiting is touched.
        let mut bytes = fs::read(&seg).expect("read");
        bytes[HEADER as usize + 3] ^= 0xFF;
        fs::write(&seg, &bytes).expect("write");
        let (mut s, rec) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("reopen");
        assert_eq!(rec.records, 2);
        assert_eq!(rec.corrupt_bytes + rec.torn_bytes, 0);
        assert_eq!(drain(&mut s), vec![self::rec(2), self::rec(3)]);
    }

    #[test]
    fn a_full_spill_refuses_a_whole_batch_and_takes_it_once_drained() {
        let dir = tempfile::tempdir().expect("dir");
        let mut one = Vec::new();
        encode(&rec(1), &mut one).expect("encode");
        let size = one.len() as u64;
        let (mut s, _) = Spill::open(dir.path(), 3 * size, 1 << 20).expect("open");
        s.append(&[rec(1), rec(1)]).expect("two fit");
        let full = s.append(&[rec(1), rec(1)]).expect_err("four do not");
        assert!(
            matches!(full, SpillError::Full { used, asked, .. } if used == 2 * size && asked == 2 * size)
        );
        assert_eq!(
            s.bytes(),
            2 * size,
            "nothing of the refused batch was written"
        );
        let got = s.read(s.cursor(), 1).expect("read");
        s.commit(got[0].1).expect("commit");
        s.append(&[rec(1), rec(1)])
            .expect("fits once one was drained");
        assert_eq!(s.bytes(), 3 * size);
    }

    #[test]
    fn positions_outside_the_spill_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20, 1 << 20).expect("open");
        let end = s.append(&[rec(1)]).expect("append");
        let past = Position {
            segment: end.segment,
            offset: end.offset + 1,
        };
        assert!(matches!(s.commit(past), Err(SpillError::OutOfRange { .. })));
        assert!(matches!(
            s.read(past, 1),
            Err(SpillError::OutOfRange { .. })
        ));
        let too_long = Record {
            key: vec![b'k'; 70_000],
            value: Vec::new(),
        };
        assert!(matches!(
            s.append(&[too_long]),
            Err(SpillError::KeyTooLong(70_000))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Whatever the batches, segment size and drain steps, with a
        /// reopen between any two steps, the records drained are the
        /// records appended, in order, once each.
        #[test]
        fn drained_equals_appended(
            batches in proptest::collection::vec(1usize..12, 1..12),
            segment in 40u64..400,
            step in 1usize..9,
            reopen_every in 1usize..5,
        ) {
            let dir = tempfile::tempdir().expect("dir");
            let (mut s, _) = Spill::open(dir.path(), 1 << 20, segment).expect("open");
            let mut appended = Vec::new();
            let mut drained = Vec::new();
            let mut n = 0u32;
            for (i, b) in batches.iter().enumerate() {
                let batch: Vec<Record> = (0..*b).map(|_| { n += 1; rec(n) }).collect();
                s.append(&batch).expect("append");
                appended.extend(batch);
                let got = s.read(s.cursor(), step).expect("read");
                if let Some((_, at)) = got.last() {
                    let at = *at;
                    drained.extend(got.into_iter().map(|(r, _)| r));
                    s.commit(at).expect("commit");
                }
                if i % reopen_every == 0 {
                    drop(s);
                    s = Spill::open(dir.path(), 1 << 20, segment).expect("reopen").0;
                }
            }
            drained.extend(drain(&mut s));
            proptest::prop_assert_eq!(drained, appended);
        }
    }
}
