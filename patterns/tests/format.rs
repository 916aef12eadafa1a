//! The JSON pattern format: every field, and every error with where it is.

use cep_patterns::{compile, PatternErrors, PatternSpec};
use proptest::prelude::*;

fn errors(json: &str) -> PatternErrors {
    match PatternSpec::from_json(json) {
        Err(e) => e,
        Ok(spec) => match compile(&spec) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {json}"),
        },
    }
}

fn ok(json: &str) {
    let spec = PatternSpec::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    compile(&spec).unwrap_or_else(|e| panic!("{json}: {e}"));
}

/// Asserts that some error is at `path` (and `column`, if given) and mentions `text`.
fn has(e: &PatternErrors, path: &str, column: Option<usize>, text: &str) {
    assert!(
        e.0.iter().any(|x| x.path == path
            && (column.is_none() || x.column == column)
            && x.message.to_lowercase().contains(&text.to_lowercase())),
        "no error at {path} {column:?} mentioning '{text}' in:\n{e}"
    );
}

#[test]
fn every_field_is_accepted() {
    ok(
        r#"{"name":"p","within":"2s","within_type":"first_and_last","after_match":"no_skip","stages":[{"name":"a","where":"type == 'A'"}]}"#,
    );
    ok(
        r#"{"name":"p","within":500,"within_type":"previous_and_current","stages":[{"name":"a"},{"name":"b","contiguity":"next"}]}"#,
    );
    ok(
        r#"{"name":"p","after_match":"skip_to_next","stages":[{"name":"a","times":[2,4],"consecutive":true}]}"#,
    );
    ok(
        r#"{"name":"p","after_match":{"skip_to_first":"b"},"stages":[{"name":"a"},{"name":"b","one_or_more":true,"greedy":true},{"name":"c"}]}"#,
    );
    ok(
        r#"{"name":"p","after_match":{"skip_to_last":"b"},"stages":[{"name":"a"},{"name":"b","times_or_more":2,"allow_combinations":true,"until":"type == 'D'"},{"name":"c"}]}"#,
    );
    ok(
        r#"{"name":"p","within":"1h","stages":[{"name":"a","times":3,"max_gap":"15min"},{"name":"b","contiguity":"followed_by_any","optional":true},{"name":"c"}]}"#,
    );
    ok(
        r#"{"name":"p","within":"1d","stages":[{"name":"a"},{"name":"n","contiguity":"not_next","where":"x > 1"},{"name":"b"},{"name":"m","contiguity":"not_followed_by"}]}"#,
    );
    ok(
        r#"{"name":"p","stages":[{"name":"g","group":[{"name":"x"},{"name":"y","contiguity":"next"}],"times":2},{"name":"c","where":"count(x) == 2 && last(y.v) > 1"}]}"#,
    );
}

#[test]
fn structural_errors_say_where() {
    has(
        &errors(r#"{"name":"p"}"#),
        "",
        None,
        "missing field `stages`",
    );
    has(
        &errors(r#"{"name":"p","stages":[]}"#),
        "stages",
        None,
        "at least one stage",
    );
    has(
        &errors(r#"{"name":"","stages":[{"name":"a"}]}"#),
        "name",
        None,
        "non-empty",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","bogus":1}]}"#),
        "stages[0].bogus",
        None,
        "unknown field `bogus`",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","times":-1}]}"#),
        "stages[0].times",
        None,
        "invalid times",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","optional":"yes"}]}"#),
        "stages[0].optional",
        None,
        "expected a boolean",
    );
    has(
        &errors(r#"{"name":"p","within":"soon","stages":[{"name":"a"}]}"#),
        "within",
        None,
        "invalid duration",
    );
    has(
        &errors(r#"{"name":"p","within":-5,"stages":[{"name":"a"}]}"#),
        "within",
        None,
        "negative",
    );
    has(
        &errors(r#"{"name":"p","after_match":"skip_somewhere","stages":[{"name":"a"}]}"#),
        "after_match",
        None,
        "unknown variant",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a"},{"name":"b","contiguity":"sideways"}]}"#),
        "stages[1].contiguity",
        None,
        "unknown variant",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","contiguity":"next"}]}"#),
        "stages[0].contiguity",
        None,
        "first stage",
    );
    has(
        &errors(r#"{"name":"p","within_type":"previous_and_current","stages":[{"name":"a"}]}"#),
        "within_type",
        None,
        "needs within",
    );
    has(
        &errors("{\"name\": \"p\", \"stages\": [}"),
        "stages[0]",
        None,
        "line 1 column 26",
    );
}

#[test]
fn condition_errors_have_columns() {
    let e = errors(
        r#"{"name":"p","stages":[{"name":"a"},{"name":"b","where":"type == 'B' && value >"}]}"#,
    );
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].path, "stages[1].where");
    assert!(e.0[0].column.is_some(), "{e}");
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","where":"value > last(zz.value)"}]}"#),
        "stages[0].where",
        None,
        "zz",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","where":"name =~ '('"}]}"#),
        "stages[0].where",
        Some(9),
        "regex",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","one_or_more":true,"until":"nosuch(1)"}]}"#),
        "stages[0].until",
        Some(1),
        "nosuch",
    );
    // Every problem is reported, not just the first.
    let e =
        errors(r#"{"name":"p","stages":[{"name":"a","where":"(("},{"name":"b","where":"))"}]}"#);
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn engine_checks_are_reported_at_the_stage() {
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","times":2,"one_or_more":true}]}"#),
        "stages[0]",
        None,
        "only one of",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","greedy":true}]}"#),
        "stages[0]",
        None,
        "greedy",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","until":"true"}]}"#),
        "stages[0]",
        None,
        "looping",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","consecutive":true}]}"#),
        "stages[0]",
        None,
        "consecutive",
    );
    has(
        &errors(
            r#"{"name":"p","stages":[{"name":"a","times":2,"consecutive":true,"allow_combinations":true}]}"#,
        ),
        "stages[0]",
        None,
        "either",
    );
    has(
        &errors(
            r#"{"name":"p","stages":[{"name":"a","optional":true},{"name":"b","contiguity":"not_next"},{"name":"c"}]}"#,
        ),
        "stages[1]",
        None,
        "optional",
    );
    has(
        &errors(
            r#"{"name":"p","stages":[{"name":"a"},{"name":"b","contiguity":"not_followed_by"}]}"#,
        ),
        "stages[1]",
        None,
        "window",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a"},{"name":"a"}]}"#),
        "stages[1]",
        None,
        "duplicate",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a:b"}]}"#),
        "stages[0]",
        None,
        "':'",
    );
    has(
        &errors(r#"{"name":"p","after_match":{"skip_to_first":"zz"},"stages":[{"name":"a"}]}"#),
        "after_match",
        None,
        "zz",
    );
    has(
        &errors(r#"{"name":"p","within":"1s","stages":[{"name":"a","times":2,"max_gap":"2s"}]}"#),
        "",
        None,
        "window",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","max_gap":"2s"}]}"#),
        "stages[0]",
        None,
        "max_gap",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"g","group":[{"name":"x"}],"where":"true"}]}"#),
        "stages[0]",
        None,
        "group",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"g","group":[]}]}"#),
        "stages[0].group",
        None,
        "at least one",
    );
    has(
        &errors(
            r#"{"name":"p","stages":[{"name":"a"},{"name":"g","group":[{"name":"x"}],"contiguity":"not_next"}]}"#,
        ),
        "stages[1].contiguity",
        None,
        "NOT",
    );
    has(
        &errors(r#"{"name":"p","stages":[{"name":"a","times":[3,2]}]}"#),
        "stages[0]",
        None,
        "greater than or equal",
    );
}

#[test]
fn the_conformance_patterns_are_valid() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/patterns");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("conformance patterns not found at {}", dir.display());
    };
    let mut n = 0;
    for e in entries {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        ok(&text);
        n += 1;
    }
    assert_eq!(n, 22);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No input makes parsing or compiling panic.
    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        if let Ok(spec) = PatternSpec::from_json(&s) {
            let _ = compile(&spec);
        }
    }

    /// Structurally valid patterns with arbitrary field combinations never panic either.
    #[test]
    fn arbitrary_stages_never_panic(
        stages in prop::collection::vec((
            0usize..6, prop::option::of(0u32..4), any::<bool>(), any::<bool>(), any::<bool>(),
            any::<bool>(), any::<bool>(), prop::option::of(0u32..3), any::<bool>()), 1..5),
        within in prop::option::of(0i64..5000),
        skip in 0usize..5,
    ) {
        let contig = ["next", "followed_by", "followed_by_any", "not_next", "not_followed_by", "followed_by"];
        let st: Vec<serde_json::Value> = stages.iter().enumerate().map(|(i, (c, times, oom, opt, greedy, consec, comb, tom, until))| {
            let mut s = serde_json::json!({"name": format!("s{i}"), "where": "value > 1"});
            if i > 0 { s["contiguity"] = contig[*c].into(); }
            if let Some(t) = times { s["times"] = (*t).into(); }
            if *oom { s["one_or_more"] = true.into(); }
            if *opt { s["optional"] = true.into(); }
            if *greedy { s["greedy"] = true.into(); }
            if *consec { s["consecutive"] = true.into(); }
            if *comb { s["allow_combinations"] = true.into(); }
            if let Some(t) = tom { s["times_or_more"] = (*t).into(); }
            if *until { s["until"] = "type == 'X'".into(); }
            s
        }).collect();
        let mut p = serde_json::json!({"name": "p", "stages": st});
        if let Some(w) = within { p["within"] = w.into(); }
        p["after_match"] = match skip {
            0 => "no_skip".into(), 1 => "skip_to_next".into(), 2 => "skip_past_last_event".into(),
            3 => serde_json::json!({"skip_to_first": "s0"}), _ => serde_json::json!({"skip_to_last": "s1"}),
        };
        if let Ok(spec) = PatternSpec::from_value(p) {
            let _ = compile(&spec);
        }
    }
}
