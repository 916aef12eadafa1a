//! A compiled pattern's automaton as JSON, for the console's graph: states, and take, ignore
//! and proceed transitions with their conditions as the pattern wrote them.

use cep::{Action, Kind};
use serde_json::{json, Value};

use crate::engine::CompiledPattern;

/// `{"window", "matcher", "states": [{"id", "name", "stage", "kind", "transitions": [{"action",
/// "target", "condition"}]}]}`; `window` is the pattern's window in ms (null without one),
/// `matcher` what runs the pattern's keys (`strict chain`, `chain`: the matchers for patterns
/// that never branch; `automaton`: the general one), `stage` the stage whose events a state
/// takes.
pub fn automaton(pattern: &CompiledPattern) -> Value {
    let nfa = pattern.nfa();
    let pages = nfa.pages();
    let states: Vec<Value> = nfa
        .states()
        .iter()
        .enumerate()
        .map(|(id, s)| {
            let kind = match s.kind {
                Kind::Start => "start",
                Kind::Normal => "normal",
                Kind::Final => "final",
                Kind::Stop => "stop",
                Kind::Pending => "pending",
            };
            let transitions: Vec<Value> = s
                .transitions
                .iter()
                .map(|t| {
                    let action = match t.action {
                        Action::Take => "take",
                        Action::Ignore => "ignore",
                        Action::Proceed => "proceed",
                    };
                    json!({
                        "action": action,
                        "target": t.target,
                        "condition": nfa.condition_text(&t.cond),
                    })
                })
                .collect();
            json!({
                "id": id,
                "name": s.name,
                "stage": pages.get(s.page as usize).map(|p| p.to_string()),
                "kind": kind,
                "transitions": transitions,
            })
        })
        .collect();
    let window = nfa.window();
    json!({
        "window": (window > 0).then_some(window),
        "matcher": nfa.matcher(),
        "states": states,
    })
}

/// When a partial match that started at `start` times out: the end of the pattern's window
/// (None without one).
pub fn times_out_at(pattern: &CompiledPattern, start: i64) -> Option<i64> {
    let window = pattern.nfa().window();
    (window > 0).then(|| start.saturating_add(window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{compile, PatternSpec};

    #[test]
    fn conditions_read_as_written() {
        let spec = PatternSpec::from_json(
            r#"{"name": "p", "within": "2s", "stages": [
                {"name": "a", "where": "type == 'fail'"},
                {"name": "b", "where": "amount > 10", "contiguity": "next"}]}"#,
        )
        .unwrap();
        let graph = automaton(&compile(&spec).unwrap());
        assert_eq!(graph["window"], 2000);
        let takes: Vec<&str> = graph["states"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["transitions"].as_array().unwrap())
            .filter(|t| t["action"] == "take")
            .map(|t| t["condition"].as_str().unwrap())
            .collect();
        assert!(takes.contains(&"type == 'fail'"), "{takes:?}");
        assert!(takes.contains(&"amount > 10"), "{takes:?}");
        let kinds: Vec<&str> = graph["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"start") && kinds.contains(&"final"),
            "{kinds:?}"
        );
    }
}
