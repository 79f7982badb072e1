//! `promtool check metrics`: Prometheus' own linter of the exposition
//! format and its naming conventions (units, `_total` on counters, …).
//!
//! promtool comes with Debian's `prometheus` package, which
//! `scripts/test.sh` installs when it is missing. `FOOTPRINT_PROMTOOL`
//! names another binary.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The promtool binary.
fn promtool() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FOOTPRINT_PROMTOOL") {
        return Ok(p.into());
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
        .context(
            "promtool is not installed: install Debian's `prometheus` package (scripts/test.sh does)",
        )
}

/// Runs `promtool check metrics` on `text`; an error with what it said
/// unless it found nothing to report.
pub fn check_metrics(text: &str) -> Result<()> {
    let mut child = Command::new(promtool()?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start promtool")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics ({}):\n{said}", out.status);
    }
    Ok(())
}
