//! Shared by tests that compare with `../shared/flink-reference`.

use std::fmt::Display;

use cep::{Output, OutputKind};

/// `outputs` as the Flink reference prints them, sorted: `M|key|stage=ids;...` for a match,
/// `T|key|stage=ids;...|time` for a timeout (stages without events left out), each event shown
/// by `id`. Panics on a late event: these tests expect none.
pub fn oracle_lines<K: Display, E>(
    outputs: &[Output<K, E>],
    id: impl Fn(&E) -> String,
) -> Vec<String> {
    let mut lines: Vec<String> = outputs
        .iter()
        .map(|o| {
            let stages: Vec<String> = o
                .events
                .iter()
                .filter(|(_, evs)| !evs.is_empty())
                .map(|(stage, evs)| {
                    let ids: Vec<String> = evs.iter().map(|e| id(e)).collect();
                    format!("{stage}={}", ids.join(","))
                })
                .collect();
            let body = format!("{}|{}", o.key, stages.join(";"));
            match o.kind {
                OutputKind::Match => format!("M|{body}"),
                OutputKind::Timeout => format!("T|{body}|{}", o.timestamp),
                OutputKind::Late => panic!("no late events expected"),
            }
        })
        .collect();
    lines.sort();
    lines
}
