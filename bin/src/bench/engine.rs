//! The engine benchmark: decoding, windowing and aggregation over a file
//! batch of the generated clickstream, without a broker or stores.
//!
//! The clickstream is written once per partition as length-prefixed
//! payloads (`.footprint/bench/…`), then read back through [`FileReader`],
//! a [`PartitionReader`] with a buffer of its own per partition: the
//! dataflow gets bytes from the page cache as it would from a broker's
//! fetch buffer, and memory holds the pipeline's state, not the input.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use footprint_dataflows::clickstream::Generator;
use footprint_dataflows::pipeline::Shared;
use footprint_dataflows::pipeline::{assigned, build};
use footprint_dataflows::source::{Message, PartitionReader, ReadStatus, SourceSettings, Verdict};
use footprint_dataflows::{Output, PipelineSpec};
use timely::dataflow::operators::Inspect;

use super::Workload;

/// Partitions of the bench clickstream.
pub const PARTITIONS: u32 = 4;

/// Writes the first `events` messages of the `workload` clickstream, one
/// file per partition under `dir`, unless they are there already. Returns
/// the files.
pub fn clickstream_files(dir: &Path, events: u64, workload: Workload) -> Result<Vec<PathBuf>> {
    let base = dir.join(format!("clickstream-{}-{events}", workload.name()));
    let files: Vec<PathBuf> = (0..PARTITIONS)
        .map(|p| base.with_extension(format!("p{p}")))
        .collect();
    let done = base.with_extension("done");
    if done.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "bench: writing {events} generated events to {}.p*",
        base.display()
    );
    let mut out: Vec<BufWriter<File>> = files
        .iter()
        .map(|f| File::create(f).map(BufWriter::new))
        .collect::<std::io::Result<_>>()?;
    let mut g = Generator::new(workload.config(PARTITIONS));
    for _ in 0..events {
        let e = g.next_event();
        let w = &mut out[e.partition as usize];
        w.write_all(&(e.payload.len() as u32).to_le_bytes())?;
        w.write_all(&e.payload)?;
    }
    for mut w in out {
        w.flush()?;
    }
    File::create(&done)?;
    Ok(files)
}

/// Reads partitions from files of length-prefixed payloads.
pub struct FileReader {
    files: Vec<BufReader<File>>,
    offsets: Vec<i64>,
    ended: Vec<bool>,
    ids: Vec<u32>,
    payload: Vec<u8>,
}

impl FileReader {
    /// Opens `files`, whose partition numbers are `ids`.
    pub fn open(files: &[PathBuf], ids: Vec<u32>) -> Result<Self> {
        let readers = files
            .iter()
            .map(|f| {
                File::open(f)
                    .map(|f| BufReader::with_capacity(1 << 20, f))
                    .with_context(|| format!("opening {}", f.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileReader {
            offsets: vec![0; readers.len()],
            ended: vec![false; readers.len()],
            files: readers,
            ids,
            payload: Vec::new(),
        })
    }
}

impl PartitionReader for FileReader {
    type Error = std::convert::Infallible;

    fn partitions(&self) -> usize {
        self.files.len()
    }

    fn partition_id(&self, idx: usize) -> u32 {
        self.ids[idx]
    }

    fn read(
        &mut self,
        idx: usize,
        max: usize,
        handle: &mut dyn FnMut(&Message<'_>) -> Verdict,
    ) -> ReadStatus {
        let mut status = ReadStatus::default();
        while status.read < max && !self.ended[idx] {
            let mut len = [0u8; 4];
            if self.files[idx].read_exact(&mut len).is_err() {
                self.ended[idx] = true;
                break;
            }
            self.payload.resize(u32::from_le_bytes(len) as usize, 0);
            if self.files[idx].read_exact(&mut self.payload).is_err() {
                self.ended[idx] = true;
                break;
            }
            let msg = Message {
                payload: &self.payload,
                offset: self.offsets[idx],
                timestamp_ms: None,
                tail: false,
            };
            let _ = handle(&msg);
            self.offsets[idx] += 1;
            status.read += 1;
        }
        status.at_end = self.ended[idx];
        status.finished = self.ended[idx];
        status
    }
}

/// What one engine run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EngineRun {
    /// Messages read.
    pub events: u64,
    /// Result rows emitted.
    pub rows: u64,
    /// Wall time of the dataflow, from its start to its end.
    pub seconds: f64,
    /// The process's peak resident memory, bytes (Linux).
    pub peak_rss: Option<u64>,
}

/// Runs `spec` over `files` on `workers` workers to the end of the input.
pub fn run(spec: PipelineSpec, files: Vec<PathBuf>, workers: usize) -> Result<EngineRun> {
    let spec = Arc::new(spec);
    let rows = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let (r, e, f) = (Arc::clone(&rows), Arc::clone(&events), Arc::clone(&failure));
    let names: Vec<String> = spec.aggregates.iter().map(|a| a.name.clone()).collect();
    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let ids = assigned(files.len(), worker.index(), worker.peers());
        let mine: Vec<PathBuf> = ids.iter().map(|i| files[*i].clone()).collect();
        let reader = match FileReader::open(&mine, ids.iter().map(|i| *i as u32).collect()) {
            Ok(r) => r,
            Err(err) => {
                if let Ok(mut slot) = f.lock() {
                    *slot = Some(format!("{err:#}"));
                }
                return;
            }
        };
        let shared = Shared::unregistered(names.clone());
        let m = Arc::clone(&shared.metrics);
        let r = Arc::clone(&r);
        let settings = SourceSettings {
            idle_timeout: Duration::from_secs(3600),
            ..SourceSettings::default()
        };
        worker.dataflow::<u64, _, _>(|scope| {
            build(scope, reader, Arc::clone(&spec), settings, shared).inspect(move |_: &Output| {
                r.fetch_add(1, Ordering::Relaxed);
            });
        });
        while worker.step_or_park(None) {}
        e.fetch_add(m.events_in(), Ordering::Relaxed);
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(err) = failure.lock().ok().and_then(|mut f| f.take()) {
        anyhow::bail!(err);
    }
    Ok(EngineRun {
        events: events.load(Ordering::Relaxed),
        rows: rows.load(Ordering::Relaxed),
        seconds,
        peak_rss: super::peak_rss(),
    })
}
