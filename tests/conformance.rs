//! The conformance corpus of `../shared/conformance`: Flink CEP 2.3's own outputs for 22
//! patterns over 5,262 events. The engine, through the JSON path exactly as `cep run` drives it,
//! must agree on every output (compared as multisets, like the corpus's `compare.py`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cep_patterns::{compile, EngineConfig, JsonEngine, OutputKind, PatternSpec, TimeFormat};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("CEP_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"),
    }
}

type Tuple = (String, String, String, String, String);

fn reference(text: &str) -> BTreeMap<Tuple, i64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let p: Vec<&str> = line.trim().split('|').collect();
        if p.len() < 4 || (p[0] != "M" && p[0] != "T") {
            continue;
        }
        let mut stages: Vec<&str> = p[3].split(';').collect();
        stages.sort();
        let ts = if p[0] == "T" {
            p[4].to_string()
        } else {
            String::new()
        };
        *out.entry((
            p[0].to_string(),
            p[1].to_string(),
            p[2].to_string(),
            stages.join(";"),
            ts,
        ))
        .or_insert(0) += 1;
    }
    out
}

#[test]
fn agrees_with_flink_on_the_conformance_corpus() {
    let dir = corpus_dir();
    assert!(
        dir.join("expected.txt").exists(),
        "conformance corpus not found at {} (set CEP_CONFORMANCE_DIR)",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("patterns"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let patterns: Vec<_> = files
        .iter()
        .map(|f| {
            let spec = PatternSpec::from_json(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            Arc::new(compile(&spec).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        })
        .collect();
    assert_eq!(patterns.len(), 22);
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: 300,
    };
    let mut engine = JsonEngine::new(config, patterns).unwrap();
    let mut outs = Vec::new();
    for line in std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
    {
        if line.trim().is_empty() {
            continue;
        }
        engine
            .push(serde_json::from_str(line).unwrap(), &mut outs)
            .unwrap();
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    let mut got: BTreeMap<Tuple, i64> = BTreeMap::new();
    for o in &outs {
        let kind = match o.kind {
            OutputKind::Match => "M",
            OutputKind::Timeout => "T",
            OutputKind::Late => panic!("no event of the corpus is late: {o:?}"),
        };
        let mut stages: Vec<String> = o
            .events
            .as_ref()
            .unwrap()
            .iter()
            .filter(|(_, evs)| !evs.is_empty())
            .map(|(s, evs)| {
                let ids: Vec<String> = evs.iter().map(|e| e.value()["id"].to_string()).collect();
                format!("{s}={}", ids.join(","))
            })
            .collect();
        stages.sort();
        let ts = if kind == "T" {
            o.timestamp.to_string()
        } else {
            String::new()
        };
        let key = (
            kind.to_string(),
            o.pattern.as_deref().unwrap().to_string(),
            o.key.clone(),
            stages.join(";"),
            ts,
        );
        *got.entry(key).or_insert(0) += 1;
    }
    let want = reference(&std::fs::read_to_string(dir.join("expected.txt")).unwrap());
    let mut per: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut diffs = Vec::new();
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, g) = (*want.get(k).unwrap_or(&0), *got.get(k).unwrap_or(&0));
        if w != g && diffs.len() < 40 {
            diffs.push(format!("{} {k:?}", if w > g { "missing" } else { "extra" }));
        }
    }
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, g) = (*want.get(k).unwrap_or(&0), *got.get(k).unwrap_or(&0));
        let e = per.entry(k.1.clone()).or_default();
        e.0 += w.min(g);
        e.1 += (w - g).max(0);
        e.2 += (g - w).max(0);
    }
    let report: Vec<String> = per
        .iter()
        .map(|(p, (a, m, x))| format!("{p:16} agree={a:6} missing={m:5} extra={x:5}"))
        .collect();
    let agreed: i64 = per.values().map(|v| v.0).sum();
    let total: i64 = want.values().sum();
    println!("{}\nagreement {agreed}/{total}", report.join("\n"));
    assert!(total > 10_000, "the reference outputs are missing");
    let bad = per.values().any(|(_, m, x)| *m > 0 || *x > 0);
    assert!(!bad, "{}\n{}", report.join("\n"), diffs.join("\n"));
}
