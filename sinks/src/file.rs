//! The file sink: every row as one JSON object per line (JSON Lines).
//!
//! It appends; it does not apply the version rule itself, because a log of
//! every emitted row is what a file is for. Readers take, per identity, the
//! row with the highest version (`footprint_dataflows::reference::Collected`
//! does exactly that). With several workers, worker `i` writes
//! `PATH` with `.wI` inserted before the extension (worker 0 uses `PATH`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use footprint_dataflows::Output;

use crate::{Sink, SinkError, SinkFactory};

/// Builds file sinks writing to `path`.
#[derive(Debug, Clone)]
pub struct FileSinkFactory {
    path: PathBuf,
}

impl FileSinkFactory {
    /// Rows go to `path` (`-` for standard output).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSinkFactory { path: path.into() }
    }

    /// The file worker `worker` writes.
    pub fn path_for(&self, worker: usize) -> PathBuf {
        if worker == 0 {
            return self.path.clone();
        }
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match self.path.extension() {
            Some(ext) => format!("{stem}.w{worker}.{}", ext.to_string_lossy()),
            None => format!("{stem}.w{worker}"),
        };
        self.path.with_file_name(name)
    }
}

impl SinkFactory for FileSinkFactory {
    fn name(&self) -> &str {
        "file"
    }

    fn build(&self, worker: usize, _peers: usize) -> Result<Box<dyn Sink>, SinkError> {
        if self.path == Path::new("-") {
            return Ok(Box::new(FileSink {
                out: Box::new(std::io::stdout()),
                path: self.path.clone(),
            }));
        }
        let path = self.path_for(worker);
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SinkError::Config {
                sink: "file".into(),
                detail: format!("cannot open {}: {e}", path.display()),
            })?;
        Ok(Box::new(FileSink {
            out: Box::new(BufWriter::new(file)),
            path,
        }))
    }
}

/// Appends rows as JSON lines.
pub struct FileSink {
    out: Box<dyn Write + Send>,
    path: PathBuf,
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn write(&mut self, rows: &[Output]) -> Result<(), SinkError> {
        for row in rows {
            let line = row.to_json().to_string();
            writeln!(self.out, "{line}").map_err(|e| SinkError::Unavailable {
                sink: "file".into(),
                detail: format!("{}: {e}", self.path.display()),
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| SinkError::Unavailable {
            sink: "file".into(),
            detail: format!("{}: {e}", self.path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_write_separate_files() {
        let f = FileSinkFactory::new("/tmp/out/results.jsonl");
        assert_eq!(f.path_for(0), PathBuf::from("/tmp/out/results.jsonl"));
        assert_eq!(f.path_for(3), PathBuf::from("/tmp/out/results.w3.jsonl"));
    }

    #[test]
    fn writes_one_json_object_per_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.jsonl");
        let mut sink = FileSinkFactory::new(&path).build(0, 1).expect("sink");
        let row = Output::Recent(footprint_dataflows::RecentRow {
            app_id: "a".into(),
            user_id: "u".into(),
            events: vec![],
        });
        sink.write(&[row.clone(), row]).expect("write");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["user_id"], "u");
        assert_eq!(lines[0]["kind"], "recent");
    }
}
