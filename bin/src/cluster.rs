//! Where this process sits in a timely cluster: `--process i --processes N
//! --hosts FILE`.
//!
//! Every process of a cluster runs the same number of worker threads. Timely
//! numbers the workers of process `i` from `i × threads`, and Kafka
//! partitions are spread over all the workers of all the processes. The
//! hosts file lists one `host:port` per line, process 0 first; blank lines
//! and lines starting with `#` are skipped.

use std::path::{Path, PathBuf};

use crate::UsageError;

/// This process's place in a timely cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Index of this process, from 0.
    pub process: usize,
    /// Addresses of every process, in process order (`host:port`).
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Reads `hosts` and checks `process` and `processes` against it.
    pub fn from_hosts(process: usize, processes: usize, hosts: &Path) -> Result<Self, UsageError> {
        let text = std::fs::read_to_string(hosts).map_err(|e| {
            UsageError(format!(
                "cannot read the hosts file {}: {e}",
                hosts.display()
            ))
        })?;
        Self::parse(process, processes, &text, hosts)
    }

    fn parse(
        process: usize,
        processes: usize,
        text: &str,
        hosts: &Path,
    ) -> Result<Self, UsageError> {
        if processes < 2 {
            return Err(UsageError(format!(
                "--processes must be at least 2 for a cluster, not {processes}"
            )));
        }
        if process >= processes {
            return Err(UsageError(format!(
                "--process {process} is out of range: processes are numbered 0 to {}",
                processes - 1
            )));
        }
        let mut addresses = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let valid = line
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(UsageError(format!(
                    "{} line {}: `{line}` is not host:port",
                    hosts.display(),
                    n + 1
                )));
            }
            addresses.push(line.to_owned());
        }
        if addresses.len() < processes {
            return Err(UsageError(format!(
                "{} lists {} addresses, but --processes is {processes}",
                hosts.display(),
                addresses.len()
            )));
        }
        addresses.truncate(processes);
        Ok(Cluster { process, addresses })
    }

    /// Number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// The timely configuration for `threads` workers in this process.
    pub fn timely(&self, threads: usize) -> timely::Config {
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }

    /// A per-process variant of a local file path (`footprint-retry.journal`
    /// becomes `footprint-retry.p1.journal` on process 1), so that processes
    /// sharing a machine do not share files.
    pub fn local_path(&self, path: &str) -> String {
        tagged_path(path, &format!("p{}", self.process))
    }

    /// This process's admin address: the configured port plus the process
    /// index (port 0 stays 0: any free port), so that processes sharing a
    /// machine do not collide.
    pub fn admin_listen(&self, listen: std::net::SocketAddr) -> std::net::SocketAddr {
        let mut a = listen;
        if a.port() != 0 {
            a.set_port(a.port().saturating_add(self.process as u16));
        }
        a
    }
}

/// `path` with `tag` before its extension (`a/journal.log` → `a/journal.TAG.log`,
/// `journal` → `journal.TAG`).
pub fn tagged_path(path: &str, tag: &str) -> String {
    let p = PathBuf::from(path);
    let name = match (p.file_stem(), p.extension()) {
        (Some(stem), Some(ext)) => {
            format!("{}.{tag}.{}", stem.to_string_lossy(), ext.to_string_lossy())
        }
        _ => format!(
            "{}.{tag}",
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ),
    };
    p.with_file_name(name).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(process: usize, processes: usize, text: &str) -> Result<Cluster, UsageError> {
        Cluster::parse(process, processes, text, Path::new("hosts"))
    }

    #[test]
    fn reads_one_address_per_process_skipping_comments() {
        let c = parse(
            1,
            2,
            "# cluster\n10.0.0.1:2101\n\n10.0.0.2:2101\n10.0.0.3:2101\n",
        )
        .expect("valid");
        assert_eq!(c.addresses, vec!["10.0.0.1:2101", "10.0.0.2:2101"]);
        assert_eq!(c.processes(), 2);
    }

    #[test]
    fn rejects_what_cannot_form_a_cluster() {
        let short = parse(0, 3, "a:1\nb:2\n").expect_err("too few");
        assert!(
            short.0.contains("lists 2 addresses, but --processes is 3"),
            "{short}"
        );
        let range = parse(2, 2, "a:1\nb:2\n").expect_err("out of range");
        assert!(range.0.contains("--process 2 is out of range"), "{range}");
        let bad = parse(0, 2, "a:1\nb\n").expect_err("no port");
        assert!(bad.0.contains("line 2: `b` is not host:port"), "{bad}");
        assert!(
            parse(0, 1, "a:1\n").is_err(),
            "one process is not a cluster"
        );
    }

    #[test]
    fn local_files_and_admin_ports_differ_per_process() {
        let c = parse(1, 2, "a:1\nb:2\n").expect("valid");
        assert_eq!(
            c.local_path("footprint-retry.journal"),
            "footprint-retry.p1.journal"
        );
        assert_eq!(
            c.local_path("/var/lib/fp/journal"),
            "/var/lib/fp/journal.p1"
        );
        let listen: std::net::SocketAddr = "127.0.0.1:9464".parse().expect("addr");
        assert_eq!(c.admin_listen(listen).port(), 9465);
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(c.admin_listen(any).port(), 0);
        assert_eq!(
            tagged_path("x/journal.log", "backfill"),
            "x/journal.backfill.log"
        );
    }
}
