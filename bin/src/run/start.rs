//! Where a run reads, as the command line asks: the start mode, or an
//! explicit backfill (`--from … --to …`, parsed here). The planning itself
//! is one call into [`footprint_connectors::start`]; this module adds what
//! only the command knows: the `footprint worker --from … --to …` command
//! that fills in what a start skipped.

use footprint_connectors::admin::Admin;
use footprint_connectors::offsets::Skipped;
use footprint_connectors::positions::StartMode;
use footprint_connectors::start::{self, StartPlan, StartRequest};

use crate::UsageError;
use crate::config::{Config, Start};

pub use footprint_connectors::start::BackfillRange;

/// Pairs `--from` and `--to` lists (`P:OFFSET` with one source topic,
/// `TOPIC:P:OFFSET` otherwise, comma-separated) into backfill ranges. Both
/// must name the same partitions, and each range must not end before it
/// starts.
pub fn parse_backfill(
    from: &str,
    to: &str,
    topics: &[String],
) -> Result<Vec<BackfillRange>, UsageError> {
    let from = parse_points("--from", from, topics)?;
    let to = parse_points("--to", to, topics)?;
    let mut out = Vec::new();
    for (topic, partition, start) in &from {
        let Some((_, _, end)) = to.iter().find(|(t, p, _)| t == topic && p == partition) else {
            return Err(UsageError(format!(
                "--from names {topic}:{partition}, but --to does not"
            )));
        };
        if end < start {
            return Err(UsageError(format!(
                "{topic}:{partition}: --to {end} is before --from {start}"
            )));
        }
        out.push(BackfillRange {
            topic: topic.clone(),
            partition: *partition,
            from: *start,
            to: *end,
        });
    }
    if let Some((t, p, _)) = to
        .iter()
        .find(|(t, p, _)| !out.iter().any(|r| &r.topic == t && r.partition == *p))
    {
        return Err(UsageError(format!(
            "--to names {t}:{p}, but --from does not"
        )));
    }
    Ok(out)
}

fn parse_points(
    flag: &str,
    list: &str,
    topics: &[String],
) -> Result<Vec<(String, i32, i64)>, UsageError> {
    let mut out: Vec<(String, i32, i64)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let (topic, partition, offset) = match parts.as_slice() {
            [p, o] if topics.len() == 1 => (topics[0].clone(), *p, *o),
            [p, o] => {
                return Err(UsageError(format!(
                    "{flag} {item}: with several source topics, write TOPIC:{p}:{o}"
                )));
            }
            [t, p, o] => {
                if !topics.iter().any(|x| x == t) {
                    return Err(UsageError(format!(
                        "{flag} {item}: `{t}` is not a source topic ({})",
                        topics.join(", ")
                    )));
                }
                ((*t).to_owned(), *p, *o)
            }
            _ => {
                return Err(UsageError(format!(
                    "{flag} {item}: expected PARTITION:OFFSET or TOPIC:PARTITION:OFFSET"
                )));
            }
        };
        let partition: i32 = partition.parse().map_err(|_| {
            UsageError(format!(
                "{flag} {item}: `{partition}` is not a partition number"
            ))
        })?;
        let offset: i64 = offset
            .parse()
            .ok()
            .filter(|o: &i64| *o >= 0)
            .ok_or_else(|| UsageError(format!("{flag} {item}: `{offset}` is not an offset")))?;
        if out.iter().any(|(t, p, _)| *t == topic && *p == partition) {
            return Err(UsageError(format!(
                "{flag} names {topic}:{partition} twice"
            )));
        }
        out.push((topic, partition, offset));
    }
    if out.is_empty() {
        return Err(UsageError(format!("{flag} lists no partition")));
    }
    Ok(out)
}

/// The start mode the config and the command line ask for.
pub(super) fn mode(cfg: &Config, skip_to_latest: bool) -> StartMode {
    if skip_to_latest {
        return StartMode::SkipToLatest;
    }
    match cfg.source.start {
        Start::Committed => StartMode::Committed,
        Start::Earliest => StartMode::Earliest,
        Start::Latest => StartMode::Latest,
    }
}

/// Where every source partition starts: from the checkpoints by `mode`, or
/// the given backfill ranges. Logs the backfill command that fills in what
/// the start skipped.
pub(super) fn plan(
    cfg: &Config,
    admin: &Admin,
    mode: StartMode,
    until_end: bool,
    backfill: Option<&[BackfillRange]>,
) -> Result<StartPlan, footprint_connectors::ConnectorError> {
    let req = StartRequest {
        topics: &cfg.source.topics,
        group: &cfg.source.group_id,
        checkpoint_topic: &cfg.source.checkpoint_topic,
        mode,
        until_caught_up: until_end,
    };
    if let Some(ranges) = backfill {
        return Ok(StartPlan {
            ranges: start::plan_backfill(admin, &req, ranges)?,
            skipped: Vec::new(),
        });
    }
    let plan = start::plan(admin, &req)?;
    let fillable: Vec<&Skipped> = plan.fillable().collect();
    if !fillable.is_empty() {
        tracing::warn!(
            command = %backfill_command(&fillable, cfg.source.topics.len() > 1),
            "to fill the skipped ranges in later, run a backfill"
        );
    }
    Ok(plan)
}

/// The `footprint worker --from … --to …` that reads `skipped`.
pub fn backfill_command(skipped: &[&Skipped], name_topics: bool) -> String {
    let spec = |s: &Skipped, offset: i64| {
        if name_topics {
            format!("{}:{}:{offset}", s.topic, s.partition)
        } else {
            format!("{}:{offset}", s.partition)
        }
    };
    let from: Vec<String> = skipped.iter().map(|s| spec(s, s.from)).collect();
    let to: Vec<String> = skipped.iter().map(|s| spec(s, s.to)).collect();
    format!(
        "footprint worker --from {} --to {}",
        from.join(","),
        to.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<String> {
        vec!["events".into()]
    }

    #[test]
    fn backfill_ranges_pair_up_by_partition() {
        let r = parse_backfill("0:100,1:5", "1:50, 0:300", &one()).expect("valid");
        assert_eq!(
            r,
            vec![
                BackfillRange {
                    topic: "events".into(),
                    partition: 0,
                    from: 100,
                    to: 300
                },
                BackfillRange {
                    topic: "events".into(),
                    partition: 1,
                    from: 5,
                    to: 50
                },
            ]
        );
        let two = vec!["a".to_owned(), "b".to_owned()];
        let r = parse_backfill("b:2:7", "b:2:9", &two).expect("valid");
        assert_eq!(r[0].topic, "b");
    }

    #[test]
    fn bad_backfill_ranges_say_what_is_wrong() {
        let err = |from: &str, to: &str, topics: &[String]| {
            parse_backfill(from, to, topics).expect_err("invalid").0
        };
        assert!(err("0:10", "1:20", &one()).contains("--from names events:0, but --to does not"));
        assert!(err("0:10,1:1", "0:20,1:2,2:3", &one()).contains("--to names events:2"));
        assert!(err("0:30", "0:20", &one()).contains("--to 20 is before --from 30"));
        assert!(err("0:x", "0:20", &one()).contains("`x` is not an offset"));
        assert!(err("0:-1", "0:20", &one()).contains("`-1` is not an offset"));
        assert!(err("p:1", "0:20", &one()).contains("`p` is not a partition number"));
        assert!(err("zz:0:1", "0:20", &one()).contains("`zz` is not a source topic"));
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert!(err("0:1", "0:2", &two).contains("with several source topics"));
        assert!(err("0:1,0:2", "0:3", &one()).contains("twice"));
    }
}
