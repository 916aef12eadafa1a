//! Checks on what clients register: names, pattern documents and their limits.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::Limits;
use crate::engine::{compile, CompiledPattern, PatternError, PatternErrors, PatternSpec};
use crate::error::AppError;

/// The most repetitions (`times`) a stage may ask for; larger counts blow up the automaton.
pub const MAX_TIMES: u64 = 10_000;

/// A pattern that parsed, passed the limits and compiled.
pub struct ValidPattern {
    /// The document as registered, with its name.
    pub document: Value,
    /// The compiled pattern.
    pub compiled: Arc<CompiledPattern>,
}

/// Names of patterns and pipelines: 1 to 128 of `[A-Za-z0-9_.-]`, so they fit in paths, keys and
/// metric labels as they are.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("name '{name}' must have 1 to 128 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "name '{name}' may only contain letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// The `details` of an invalid pattern: every error with its location.
pub fn pattern_errors(errors: &PatternErrors) -> Value {
    json!({ "errors": errors.0 })
}

fn invalid(errors: Vec<PatternError>) -> AppError {
    let message = match errors.as_slice() {
        [one] if one.path.is_empty() => format!("invalid pattern: {}", one.message),
        [one] => format!("invalid pattern: {}: {}", one.path, one.message),
        many => format!("invalid pattern: {} errors", many.len()),
    };
    AppError::bad_request("invalid_pattern", message).with_details(json!({ "errors": errors }))
}

fn error(path: impl Into<String>, message: impl Into<String>) -> PatternError {
    PatternError {
        path: path.into(),
        column: None,
        message: message.into(),
    }
}

/// Checks a pattern document sent by a client. `path_name` is the name in the URL (PUT): the
/// document takes it when it has none, and must agree when it has one.
pub fn check_pattern(
    limits: &Limits,
    body: &[u8],
    path_name: Option<&str>,
) -> Result<ValidPattern, AppError> {
    if body.len() > limits.max_pattern_bytes {
        return Err(invalid(vec![error(
            "",
            format!(
                "the pattern has {} bytes; the limit is {}",
                body.len(),
                limits.max_pattern_bytes
            ),
        )]));
    }
    let mut document: Value = serde_json::from_slice(body).map_err(|e| {
        AppError::bad_request("malformed_json", format!("malformed JSON: {e}"))
            .with_details(json!({"line": e.line(), "column": e.column()}))
    })?;
    let Value::Object(map) = &mut document else {
        return Err(invalid(vec![error("", "a pattern must be a JSON object")]));
    };
    // Read-only, as GET shows it: a document read back can be sent again.
    map.remove("version");
    if let Some(path_name) = path_name {
        match map.get("name") {
            None => {
                map.insert("name".to_string(), Value::from(path_name));
            }
            Some(Value::String(n)) if n == path_name => {}
            Some(other) => {
                return Err(AppError::bad_request(
                    "name_mismatch",
                    format!(
                    "the pattern's name {other} differs from the name in the path '{path_name}'"
                ),
                ))
            }
        }
    }
    match map.get("name") {
        Some(Value::String(name)) => {
            check_name(name).map_err(|m| invalid(vec![error("name", m)]))?
        }
        Some(_) => return Err(invalid(vec![error("name", "name must be a string")])),
        None => return Err(invalid(vec![error("name", "a pattern needs a name")])),
    }
    let mut problems = Vec::new();
    check_limits(limits, map, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let text = document.to_string();
    let spec = PatternSpec::from_json(&text).map_err(|e| invalid(e.0))?;
    let compiled = compile(&spec).map_err(|e| invalid(e.0))?;
    Ok(ValidPattern {
        document,
        compiled: Arc::new(compiled),
    })
}

/// Compiles a pattern read back from the store.
pub fn check_stored(text: &str) -> Result<ValidPattern, PatternErrors> {
    let document: Value = serde_json::from_str(text)
        .map_err(|e| PatternErrors(vec![error("", format!("stored pattern is not JSON: {e}"))]))?;
    let spec = PatternSpec::from_json(text)?;
    let compiled = compile(&spec)?;
    Ok(ValidPattern {
        document,
        compiled: Arc::new(compiled),
    })
}

fn check_limits(limits: &Limits, map: &Map<String, Value>, problems: &mut Vec<PatternError>) {
    if let Some(within) = map.get("within") {
        // Read the window as the pattern format does (text or a number of milliseconds); an
        // unreadable window is the pattern parser's to report.
        if let Ok(window) = serde_json::from_value::<cep_patterns::DurationMs>(within.clone()) {
            if window.0 > limits.max_window.0 {
                problems.push(error(
                    "within",
                    format!(
                        "the window {window} is longer than the limit {}",
                        limits.max_window
                    ),
                ));
            }
        }
    }
    let mut count = 0;
    if let Some(Value::Array(stages)) = map.get("stages") {
        check_stages(limits, stages, "stages", &mut count, problems);
    }
    if count > limits.max_pattern_stages {
        problems.push(error(
            "stages",
            format!(
                "the pattern has {count} stages; the limit is {}",
                limits.max_pattern_stages
            ),
        ));
    }
}

fn check_stages(
    limits: &Limits,
    stages: &[Value],
    path: &str,
    count: &mut usize,
    problems: &mut Vec<PatternError>,
) {
    for (i, stage) in stages.iter().enumerate() {
        let here = format!("{path}[{i}]");
        *count += 1;
        let Value::Object(stage) = stage else {
            continue;
        };
        if let Some(Value::String(condition)) = stage.get("where") {
            if condition.len() > limits.max_condition_length {
                problems.push(error(
                    format!("{here}.where"),
                    format!(
                        "the condition has {} bytes; the limit is {}",
                        condition.len(),
                        limits.max_condition_length
                    ),
                ));
            }
        }
        let times: Vec<u64> = match stage.get("times") {
            Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
            Some(Value::Array(bounds)) => bounds.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        };
        if times.iter().any(|t| *t > MAX_TIMES) {
            problems.push(error(
                format!("{here}.times"),
                format!("a stage may repeat at most {MAX_TIMES} times"),
            ));
        }
        if let Some(Value::Array(group)) = stage.get("group") {
            check_stages(limits, group, &format!("{here}.group"), count, problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("login-failures_2.v1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn limits_report_locations() {
        let limits = Limits {
            max_condition_length: 10,
            max_pattern_stages: 2,
            ..Limits::default()
        };
        let doc = json!({"name": "p", "within": "30d", "stages": [
            {"name": "a", "where": "type == 'something long'"},
            {"name": "g", "group": [{"name": "x", "where": "a == 1", "times": 1000000}]}
        ]});
        let map = doc.as_object().unwrap();
        let mut problems = Vec::new();
        check_limits(&limits, map, &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "within",
                "stages[0].where",
                "stages[1].group[0].times",
                "stages"
            ]
        );
    }
}
