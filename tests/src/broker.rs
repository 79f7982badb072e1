//! [`OwnBroker`]: a tansu broker of a test's own, for broker drills.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use footprint_connectors::client::KafkaSettings;

use crate::processes::free_addresses;

/// A tansu broker of a test's own, with a file (SQLite) store, that the
/// test can kill and restart on the same port: for broker drills. Killed
/// when dropped.
pub struct OwnBroker {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    db: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    /// Starts tansu on a free loopback port, storing in `dir/broker.db`.
    pub fn start(dir: &std::path::Path) -> Result<Self> {
        let addr = free_addresses(1)?.remove(0);
        let mut b = OwnBroker {
            addr,
            db: dir.join("broker.db"),
            log: dir.join("broker.log"),
            child: None,
        };
        b.restart()?;
        Ok(b)
    }

    /// Kills the broker with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the broker again (same port, same store) and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let tansu =
            which_tansu().context("tansu is not installed: scripts/services.sh installs it")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let listener = format!("tcp://{}", self.addr);
        let child = std::process::Command::new(tansu)
            .current_dir("/")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("DATA_LAKE")
            .args([
                "broker",
                "--cluster-id",
                "footprint-drill",
                "--listener-url",
            ])
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&listener)
            .arg("--storage-engine")
            .arg(format!("sqlite://{}", self.db.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start tansu")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen on {}; see {}",
                    self.addr,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kafka settings for this broker.
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(self.addr.clone())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn which_tansu() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join(".cargo/bin/tansu")))
        .find(|p| p.is_file())
}
