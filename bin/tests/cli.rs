//! The `footprint` command's start-up checks.

use std::process::Command;

fn footprint(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_footprint"))
        .args(args)
        .env_remove("FOOTPRINT_CONFIG")
        .output()
        .expect("run footprint")
}

/// Runs `cmd` on the config at `path` (whose text is `text`), checks that
/// it exits 2 naming `key`, and returns its standard error.
fn refused_naming(path: &std::path::Path, cmd: &str, text: &str, key: &str) -> String {
    let out = footprint(&["--config", path.to_str().expect("utf8 path"), cmd]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{cmd} with {text:?}: {stderr}");
    assert!(
        stderr.contains(&format!("`{key}`")),
        "{cmd}: error must name `{key}`: {stderr}"
    );
    stderr
}

#[test]
fn a_bad_config_stops_start_up_with_the_key_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[source]\nbrokerz = \"x\"\n", "source.brokerz", "brokerz"),
        (
            "[watermark]\nmax_out_of_order = \"soon\"\n",
            "watermark.max_out_of_order",
            "soon",
        ),
        (
            "[[aggregate]]\nname = \"a\"\nwindow = { tumbling = \"1m\" }\nmeasures = [\"avg(value)\"]\nsinks = [\"file\"]\n",
            "aggregate[0].measures[0]",
            "avg(value)",
        ),
    ];
    for (i, (text, key, detail)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        for cmd in ["check-config", "worker"] {
            let stderr = refused_naming(&path, cmd, text, key);
            assert!(
                stderr.contains(detail),
                "{cmd}: error must quote {detail}: {stderr}"
            );
        }
    }
}

#[test]
fn a_bad_collector_section_stops_the_collector_and_check_config_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[collect]\nshed_high = 0.4\nshed_low = 0.6\n",
            "collect.shed_high",
        ),
        (
            "[collect.apps.a]\ntoken = \"same\"\n[collect.apps.b]\ntoken = \"same\"\n",
            "collect.apps.b.token",
        ),
        ("[collect]\nlisten = \"0.0.0.0:9480\"\n", "collect.listen"),
        (
            "[collect.apps.a]\nrate = { per_second = 0 }\n",
            "collect.apps.a.rate",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("collect{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        for cmd in ["check-config", "collect"] {
            refused_naming(&path, cmd, text, key);
        }
    }
}

#[test]
fn a_missing_config_file_is_reported() {
    let out = footprint(&["--config", "/nonexistent/footprint.toml", "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/footprint.toml"));
}

#[test]
fn the_embedded_defaults_are_valid() {
    let out = footprint(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("item_activity_1m") && stdout.contains("app_events_10m"),
        "{stdout}"
    );
}

#[test]
fn check_config_prints_a_pipeline_without_recent_activity_when_it_is_turned_off() {
    let on = footprint(&["check-config"]);
    assert!(
        String::from_utf8_lossy(&on.stdout).contains("recent activity on"),
        "the defaults keep recent activity"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-recent.toml");
    std::fs::write(&path, "[recent]\nenabled = false\n").expect("write config");
    let out = footprint(&[
        "--config",
        path.to_str().expect("utf8 path"),
        "check-config",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recent activity off"), "{stdout}");
    assert!(stdout.contains("item_activity_1m"), "{stdout}");
}

/// `footprint bench --mode engine` measures every workload at each worker
/// count over the whole clickstream, prints the table and writes the JSON.
#[test]
fn the_engine_bench_reads_every_event_and_reports_each_workload() {
    let dir = std::env::temp_dir().join(format!("fp-bench-cli-{}", std::process::id()));
    let json = dir.join("bench.json");
    let out = footprint(&[
        "bench",
        "--mode",
        "engine",
        "--events",
        "20000",
        "--runs",
        "1",
        "--workers",
        "1,2",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--dir",
        dir.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for w in ["count_1m", "aggregates", "default"] {
        assert!(stdout.contains(w), "{w} missing from the table:\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let engine = report["engine"].as_array().expect("engine rows");
    assert_eq!(engine.len(), 6, "3 workloads × 2 worker counts");
    for row in engine {
        assert!(row["median_events_per_sec"].as_f64().expect("a rate") > 0.0);
        for run in row["runs"].as_array().expect("runs") {
            assert_eq!(run["events"], 20_000, "{row}");
            assert!(run["rows"].as_u64().expect("rows") > 0, "{row}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
