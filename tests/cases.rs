//! Data-driven semantics tests: each file in `tests/cases/` holds a JSON pattern, events and the
//! expected outputs, in the notation of the conformance corpus:
//! `M|key|stage=id,id;stage=id`, `T|key|stage=ids|timestamp`, `L|key|id`.
//! Adding a case is adding a file.

use std::path::Path;
use std::sync::Arc;

use cep_patterns::{
    compile, DurationMs, EngineConfig, JsonEngine, JsonEvent, Output, OutputKind, PatternSpec,
    TimeFormat,
};
use serde_json::Value;

fn render(o: &Output) -> String {
    let id = |e: &Arc<JsonEvent>| e.value()["id"].to_string();
    match o.kind {
        OutputKind::Late => format!("L|{}|{}", o.key, id(o.event.as_ref().expect("late event"))),
        kind => {
            let mut stages: Vec<String> = o
                .events
                .as_ref()
                .expect("events")
                .iter()
                .map(|(s, evs)| {
                    let ids: Vec<String> = evs.iter().map(id).collect();
                    format!("{s}={}", ids.join(","))
                })
                .collect();
            stages.sort();
            let stages = stages.join(";");
            if kind == OutputKind::Match {
                format!("M|{}|{stages}", o.key)
            } else {
                format!("T|{}|{stages}|{}", o.key, o.timestamp)
            }
        }
    }
}

fn run_case(path: &Path) -> Result<(), String> {
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let spec = PatternSpec::from_value(case["pattern"].clone()).map_err(|e| e.to_string())?;
    let pattern = compile(&spec).map_err(|e| e.to_string())?;
    let ooo = match case.get("out_of_orderness") {
        Some(Value::String(s)) => DurationMs::parse(s)?.0,
        _ => 0,
    };
    let config = EngineConfig {
        key_by: "key".into(),
        time_field: "ts".into(),
        time_format: TimeFormat::EpochMs,
        out_of_orderness_ms: ooo,
    };
    let mut engine = JsonEngine::new(config, vec![Arc::new(pattern)]).map_err(|e| e.to_string())?;
    let mut outs = Vec::new();
    for e in case["events"].as_array().ok_or("events must be an array")? {
        engine.push(e.clone(), &mut outs).map_err(|e| e.message)?;
    }
    engine.advance_watermark(i64::MAX, &mut outs);
    let mut got: Vec<String> = outs.iter().map(render).collect();
    got.sort();
    let mut want: Vec<String> = case["expected"]
        .as_array()
        .ok_or("expected must be an array")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want:#?}\n     got {got:#?}"))
    }
}

#[test]
fn semantic_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the case files are missing");
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = run_case(f) {
            failures.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
