//! Running Footprint: in this process to the end of its input
//! ([`run_to_end`]), or as `footprint` processes of their own, killed when
//! dropped ([`Running`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint::config::Config;
use footprint::process::Process;
use footprint::run::{RunOptions, RunReport, run};
use footprint_dataflows::Output;
use footprint_dataflows::control::RunControl;
use footprint_sinks::SinkFactory;
use footprint_sinks::memory::MemorySinkFactory;

/// A streaming worker of `process` on `threads` threads, running in a
/// thread of its own: ask it to stop through the control, then join it.
pub fn spawn_worker(
    cfg: &Config,
    process: &Arc<Process>,
    threads: usize,
) -> (Arc<RunControl>, std::thread::JoinHandle<Result<RunReport>>) {
    let control = Arc::new(RunControl::default());
    let (cfg, process, stop) = (cfg.clone(), Arc::clone(process), Arc::clone(&control));
    let worker = std::thread::spawn(move || {
        let opts = RunOptions {
            threads: Some(threads),
            progress: None,
            control: stop,
            ..RunOptions::default()
        };
        run(&cfg, opts, &process)
    });
    (control, worker)
}

/// Runs the worker over `cfg` until every partition is caught up, with
/// `threads` workers, and returns its report and every row it emitted.
pub fn run_to_end(cfg: &Config, threads: usize) -> Result<(RunReport, Vec<Output>)> {
    let process = Process::new(cfg)?;
    let memory = MemorySinkFactory::new("memory");
    let extra: Arc<dyn SinkFactory> = Arc::new(memory.clone());
    let control = Arc::new(RunControl::default());
    let opts = RunOptions {
        threads: Some(threads),
        until_end: true,
        extra_sinks: vec![extra],
        progress: None,
        control: Arc::clone(&control),
        ..RunOptions::default()
    };
    // A run that cannot finish is stopped, so its test fails instead of hanging.
    let watchdog = Watchdog::start(Duration::from_secs(300), control);
    let report = run(cfg, opts, &process)?;
    if watchdog.fired() {
        bail!("the run did not finish within 300 s and was stopped");
    }
    Ok((report, memory.take()))
}

/// Requests a stop when its time runs out, unless dropped first.
struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn start(timeout: Duration, control: Arc<RunControl>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (Arc::clone(&done), Arc::clone(&fired));
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !d.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    f.store(true, Ordering::SeqCst);
                    control.request_stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog { done, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The `footprint` binary built for the tests (`target/debug/footprint`).
pub fn footprint_bin() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/footprint");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin footprint` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `footprint` process that is killed when dropped, so a failing test
/// leaves no process behind.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `footprint --config CONFIG ARGS…` with its log (stderr, at info
/// level, no colours) written to `log`, and its standard output to `log`
/// with `.out` added.
pub fn spawn_footprint(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<Running> {
    spawn_footprint_env(config, args, log, &[])
}

/// [`spawn_footprint`] with extra environment variables.
pub fn spawn_footprint_env(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<Running> {
    let out_path = std::path::PathBuf::from(format!("{}.out", log.display()));
    let out = std::fs::File::create(&out_path)
        .with_context(|| format!("create {}", out_path.display()))?;
    let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let child = std::process::Command::new(footprint_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(out)
        .stderr(log)
        .spawn()
        .context("start footprint")?;
    Ok(Running(child))
}

/// Runs `footprint --config CONFIG ARGS…` (its log in `log`, `env` set)
/// to its exit within `timeout`, and fails unless it succeeded, naming the
/// log to read.
pub fn run_footprint_ok(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<()> {
    let what = args.join(" ");
    let mut child = spawn_footprint_env(config, args, log, env)?;
    let status = wait_exit(&mut child, timeout, &what)?;
    if !status.success() {
        bail!(
            "`footprint {what}` exited with {status}; see {}",
            log.display()
        );
    }
    Ok(())
}

/// Waits (bounded) for `child` to exit and returns its status.
pub fn wait_exit(
    child: &mut Running,
    timeout: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Free loopback TCP addresses (`127.0.0.1:PORT`), for cluster hosts files.
pub fn free_addresses(n: usize) -> Result<Vec<String>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| Ok(format!("127.0.0.1:{}", l.local_addr()?.port())))
        .collect()
}

/// The address a `footprint` log names right after `prefix` (such as
/// `admin API: http://`), once the line that says it is complete. The
/// process writes a line in several pieces, so a line still being written
/// is not read.
pub fn address_in_log(log: &std::path::Path, prefix: &str) -> Option<Result<std::net::SocketAddr>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = &text[..text.rfind('\n')? + 1];
    let line = complete.lines().find(|l| l.contains(prefix))?;
    let rest = line.split(prefix).nth(1)?;
    let addr = rest.split('/').next().unwrap_or(rest);
    Some(
        addr.parse()
            .with_context(|| format!("`{addr}` in {}", log.display())),
    )
}

/// Waits (bounded) until the `footprint` log at `log` says where its admin
/// API listens, and returns that address.
pub fn admin_addr_from_log(log: &std::path::Path) -> Result<std::net::SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(addr) = address_in_log(log, "admin API: http://") {
            return addr;
        }
        if Instant::now() > deadline {
            bail!("{} never said where the admin API listens", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `done` holds, checking every 10 ms; an error naming `what`
/// once `timeout` passes. For waiting on a state a test can observe, never
/// on a guess of how long something takes.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
