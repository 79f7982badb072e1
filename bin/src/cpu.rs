//! Where the cores went during a run: the machine's busy time and the time
//! the hypervisor took from it (`/proc/stat`), this process's
//! (`/proc/self/stat`), and that of the broker and the stores, found by
//! process name (`/proc/<pid>/stat`).
//!
//! On one machine that runs the broker, the stores and the worker, a rate is
//! bounded by the CPU all of them need per event: these figures say which
//! of them took it (`footprint bench`, and the worker's last log line).
//! Linux only; elsewhere a [`CpuUse`] is empty.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The processes watched besides this one: a label, and the process names
/// (`/proc/<pid>/comm`) it covers. A broker or store under another name
/// counts in the machine's busy time only.
pub const WATCHED: &[(&str, &[&str])] = &[
    ("broker", &["tansu"]),
    ("Redis", &["redis-server"]),
    ("MySQL", &["mariadbd", "mysqld"]),
];

/// CPU time, in clock ticks, at one instant.
#[derive(Debug, Clone)]
pub struct CpuClock {
    at: Instant,
    machine: Option<MachineTicks>,
    own: Option<u64>,
    watched: Vec<Option<u64>>,
}

#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    busy: u64,
    steal: u64,
    total: u64,
    cpus: usize,
}

/// Cores used on average over a stretch of wall time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Wall seconds of the stretch.
    pub seconds: f64,
    /// Cores the whole machine was busy (of [`CpuUse::cpus`]), not counting
    /// [`CpuUse::stolen`].
    pub machine: Option<f64>,
    /// Cores the hypervisor gave to other machines while this one had work
    /// (steal time): a shared host's noise.
    #[serde(default)]
    pub stolen: Option<f64>,
    /// The machine's cores.
    pub cpus: Option<usize>,
    /// Cores the measuring process used.
    pub own: Option<f64>,
    /// Cores used by each of [`WATCHED`] that was found, by label.
    pub processes: Vec<(String, f64)>,
}

impl CpuUse {
    /// Cores used by the process labelled `label`, if it was found.
    pub fn process(&self, label: &str) -> Option<f64> {
        self.processes
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| *c)
    }
}

impl CpuClock {
    /// Reads the clocks now.
    pub fn start() -> Self {
        CpuClock {
            at: Instant::now(),
            machine: machine_ticks(),
            own: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| stat_ticks(&s)),
            watched: WATCHED
                .iter()
                .map(|(_, names)| named_ticks(names))
                .collect(),
        }
    }

    /// The cores used since `self` was read.
    pub fn stop(&self) -> CpuUse {
        let end = CpuClock::start();
        let seconds = end.at.duration_since(self.at).as_secs_f64();
        let (Some(m0), Some(m1)) = (self.machine, end.machine) else {
            return CpuUse {
                seconds,
                ..CpuUse::default()
            };
        };
        let total = m1.total.saturating_sub(m0.total);
        if total == 0 {
            return CpuUse {
                seconds,
                ..CpuUse::default()
            };
        }
        // Every core adds one tick per tick, busy or idle: the machine's
        // total over the stretch is its cores' worth of ticks.
        let cores = |ticks: u64| ticks as f64 * m1.cpus as f64 / total as f64;
        let since = |a: Option<u64>, b: Option<u64>| Some(cores(b?.saturating_sub(a?)));
        CpuUse {
            seconds,
            machine: Some(cores(m1.busy.saturating_sub(m0.busy))),
            stolen: Some(cores(m1.steal.saturating_sub(m0.steal))),
            cpus: Some(m1.cpus),
            own: since(self.own, end.own),
            processes: WATCHED
                .iter()
                .zip(self.watched.iter().zip(&end.watched))
                .filter_map(|((label, _), (a, b))| Some(((*label).to_owned(), since(*a, *b)?)))
                .collect(),
        }
    }
}

/// The machine's busy and total ticks over all cores, and its cores.
fn machine_ticks() -> Option<MachineTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    if v.len() < 8 {
        return None;
    }
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    let steal = v[7];
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineTicks {
        busy,
        steal,
        total: busy + steal + idle,
        cpus: cpus.max(1),
    })
}

/// User and system ticks of one `/proc/<pid>/stat` line.
fn stat_ticks(line: &str) -> Option<u64> {
    // The name (field 2) is in parentheses and may hold spaces: count the
    // fields from after its closing one, which is field 3.
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks summed over every process whose name is one of `names`; `None`
/// when there is none.
fn named_ticks(names: &[&str]) -> Option<u64> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !names.contains(&comm.trim_end()) {
            continue;
        }
        if let Some(t) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            *found.get_or_insert(0) += t;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_user_plus_system_ticks_even_with_spaces_in_the_name() {
        let line = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_ticks(line), Some(1234 + 567));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn proc_stat_gives_busy_and_total_ticks_and_the_cores() {
        let text = "cpu  100 5 50 800 20 3 2 1 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 1 0 0\nintr 1 2 3\n";
        let t = parse_proc_stat(text).expect("parsed");
        assert_eq!(t.busy, 100 + 5 + 50 + 3 + 2);
        assert_eq!(t.steal, 1);
        assert_eq!(t.total, t.busy + 1 + 800 + 20);
        assert_eq!(t.cpus, 2);
    }

    #[test]
    fn a_busy_thread_counts_in_its_process_and_in_the_machine() {
        let clock = CpuClock::start();
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = clock.stop();
        let figures = (used.own, used.machine, used.cpus);
        if !cfg!(target_os = "linux") {
            assert_eq!(figures, (None, None, None));
            return;
        }
        let (Some(own), Some(machine), Some(cpus)) = figures else {
            panic!("no CPU figures on Linux: {used:?}");
        };
        // Whatever else runs (other tests in this process too), a thread
        // that spun for 300 ms got some of a core, and the machine was busy
        // at least as long as the process (a tick of slack either way).
        let tick = 0.01 / used.seconds;
        assert!(own > 0.0, "own {own}");
        assert!(own <= cpus as f64 + 2.0 * tick, "own {own} of {cpus}");
        assert!(machine + 2.0 * tick >= own, "machine {machine}, own {own}");
        assert!(
            machine <= cpus as f64 + 2.0 * tick,
            "machine {machine} of {cpus}"
        );
    }
}
