//! GET /metrics in the Prometheus text format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::state::AppState;

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", self.name, value);
            } else {
                let _ = writeln!(out, "{}{{{}}} {}", self.name, labels, value);
            }
        }
    }
}

fn number(stats: &Value, field: &str) -> Option<f64> {
    stats.get(field).and_then(Value::as_f64)
}

/// Per-pattern partial match counts, if the engine's statistics have them: `patterns` as an
/// object by name or a list of objects with `name`/`pattern`.
fn per_pattern_partials(stats: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    match stats.get("patterns") {
        Some(Value::Object(map)) => {
            for (name, s) in map {
                if let Some(n) = number(s, "partial_matches") {
                    out.push((name.clone(), n));
                }
            }
        }
        Some(Value::Array(items)) => {
            for s in items {
                let name = s
                    .get("name")
                    .or_else(|| s.get("pattern"))
                    .and_then(Value::as_str);
                if let (Some(name), Some(n)) = (name, number(s, "partial_matches")) {
                    out.push((name.to_string(), n));
                }
            }
        }
        _ => {}
    }
    out
}

/// The metrics text.
pub fn render(state: &AppState) -> String {
    let mut events_in = Family::new(
        "cep_events_in_total",
        "counter",
        "Events accepted by a pipeline.",
    );
    let mut rejected = Family::new(
        "cep_events_rejected_total",
        "counter",
        "Records refused by a pipeline (malformed, missing key or time field, wrong type).",
    );
    let mut matches = Family::new(
        "cep_matches_total",
        "counter",
        "Matches emitted, per pipeline and pattern.",
    );
    let mut timeouts = Family::new(
        "cep_timeouts_total",
        "counter",
        "Timed-out partial matches emitted, per pipeline and pattern.",
    );
    let mut late = Family::new(
        "cep_late_events_total",
        "counter",
        "Events behind the watermark.",
    );
    let mut partials = Family::new(
        "cep_partial_matches",
        "gauge",
        "Partial matches held now, per pipeline (and per pattern when known).",
    );
    let mut keys = Family::new(
        "cep_keys",
        "gauge",
        "Keys with state held now, per pipeline.",
    );
    let mut buffered = Family::new(
        "cep_buffered_events",
        "gauge",
        "Events held by the engine (waiting for the watermark or in partial matches).",
    );
    let mut watermark = Family::new(
        "cep_watermark_ms",
        "gauge",
        "The pipeline's event-time watermark, in ms since the epoch.",
    );
    let mut paused = Family::new(
        "cep_pipeline_paused",
        "gauge",
        "1 if the pipeline's intake is paused.",
    );
    let mut patterns = Family::new("cep_patterns", "gauge", "Registered patterns.");
    let mut dropped = Family::new(
        "cep_state_dropped_total",
        "counter",
        "State dropped by the pipeline's state bounds: partial matches (max_partial_matches, \
         max_buffered_events), keys evicted (max_keys) and expired (key_ttl).",
    );
    let mut lag = Family::new(
        "cep_kafka_partition_lag",
        "gauge",
        "Records of an assigned input partition not yet processed (end offset - position).",
    );
    let mut committed = Family::new(
        "cep_kafka_partition_committed_offset",
        "gauge",
        "The input offset committed with the last epoch, per assigned partition.",
    );
    patterns.add(&[], state.pattern_count() as f64);

    for pipeline in state.pipelines() {
        let p = pipeline.name();
        let c = &pipeline.outputs().counters;
        events_in.add(
            &[("pipeline", p)],
            c.events_in.load(Ordering::Relaxed) as f64,
        );
        rejected.add(
            &[("pipeline", p)],
            c.rejected.load(Ordering::Relaxed) as f64,
        );
        late.add(&[("pipeline", p)], c.late.load(Ordering::Relaxed) as f64);
        let counts = c.patterns.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (pattern, n) in &counts {
            matches.add(&[("pipeline", p), ("pattern", pattern)], n.matches as f64);
            timeouts.add(&[("pipeline", p), ("pattern", pattern)], n.timeouts as f64);
        }
        let stats = pipeline.stats();
        if let Some(n) = number(&stats, "partial_matches") {
            partials.add(&[("pipeline", p)], n);
        }
        for (pattern, n) in per_pattern_partials(&stats) {
            partials.add(&[("pipeline", p), ("pattern", &pattern)], n);
        }
        if let Some(n) = number(&stats, "keys") {
            keys.add(&[("pipeline", p)], n);
        }
        if let Some(n) = number(&stats, "buffered_events") {
            buffered.add(&[("pipeline", p)], n);
        }
        for (field, reason) in [
            ("dropped_partial_matches", "partial_matches"),
            ("evicted_keys", "evicted_keys"),
            ("expired_keys", "expired_keys"),
        ] {
            if let Some(n) = number(&stats, field) {
                dropped.add(&[("pipeline", p), ("reason", reason)], n);
            }
        }
        let wm = pipeline.watermark();
        if wm != i64::MIN {
            watermark.add(&[("pipeline", p)], wm as f64);
        }
        paused.add(
            &[("pipeline", p)],
            if pipeline.is_paused() { 1.0 } else { 0.0 },
        );
        if let Some(status) = pipeline.kafka_status() {
            let parts = status["partitions"].as_array().cloned().unwrap_or_default();
            for part in parts {
                let topic = part["topic"].as_str().unwrap_or_default().to_string();
                let partition = part["partition"].to_string();
                let labels = [
                    ("pipeline", p),
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ];
                if let Some(n) = part["lag"].as_f64() {
                    lag.add(&labels, n);
                }
                if let Some(n) = part["committed"].as_f64() {
                    committed.add(&labels, n);
                }
            }
        }
    }
    let mut out = String::new();
    for family in [
        &events_in, &rejected, &matches, &timeouts, &late, &partials, &keys, &buffered, &dropped,
        &watermark, &paused, &patterns, &lag, &committed,
    ] {
        family.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut f = Family::new("x", "gauge", "help");
        f.add(&[("k", "a\"b\\c\nd")], 1.0);
        let mut out = String::new();
        f.write(&mut out);
        assert!(out.contains("x{k=\"a\\\"b\\\\c\\nd\"} 1"));
    }
}
