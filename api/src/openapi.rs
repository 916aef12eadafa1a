//! The OpenAPI 3 document served at GET /api/v1/openapi.json, written by hand.

use serde_json::{json, Map, Value};

fn error_ref(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn name_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// Adds the answers every authenticated endpoint can give.
fn op(mut operation: Value, open: bool) -> Value {
    let responses = operation["responses"].as_object_mut().expect("responses");
    if !open {
        responses.insert("401".into(), error_ref("Missing or wrong bearer token."));
    }
    responses.insert(
        "500".into(),
        error_ref("Internal error (details are logged, not returned)."),
    );
    if open {
        operation["security"] = json!([]);
    }
    operation
}

fn output_filters() -> Vec<Value> {
    vec![
        name_param("name", "Pipeline name."),
        query_param(
            "pattern",
            "Only this pattern's outputs.",
            json!({"type": "string"}),
        ),
        query_param("key", "Only this key's outputs.", json!({"type": "string"})),
        query_param(
            "kind",
            "Only this kind of output.",
            json!({"type": "string", "enum": ["match", "timeout", "late"]}),
        ),
        query_param(
            "after",
            "Only outputs with a larger seq.",
            json!({"type": "integer", "minimum": 0}),
        ),
    ]
}

/// The document.
pub fn document() -> Value {
    let pattern_body = json!({
        "required": true,
        "content": {"application/json": {"schema": schema("Pattern")}}
    });
    let pipeline_body = json!({
        "required": true,
        "content": {"application/json": {"schema": schema("Pipeline")}}
    });
    let pipeline_name = name_param("name", "Pipeline name.");
    let pattern_name = name_param("name", "Pattern name.");
    let mut paths = Map::new();
    paths.insert(
        "/healthz".into(),
        json!({"get": op(json!({
        "summary": "Liveness: the process answers.",
        "responses": {"200": json_response("Alive.", json!({"type": "object"}))}
    }), true)}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": op(json!({
        "summary": "Readiness: the store is open and the service is not shutting down.",
        "responses": {
            "200": json_response("Ready.", json!({"type": "object"})),
            "503": error_ref("Shutting down.")
        }
    }), true)}),
    );
    paths.insert("/metrics".into(), json!({"get": op(json!({
        "summary": "Prometheus metrics: events in, rejected, matches, timeouts, late events, partial matches, keys, watermark; per pipeline and pattern.",
        "responses": {"200": {"description": "Prometheus text format 0.0.4.", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    }), false)}));
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": op(json!({
        "summary": "This document.",
        "responses": {"200": json_response("OpenAPI 3 document.", json!({"type": "object"}))}
    }), false)}),
    );
    paths.insert("/api/v1/patterns".into(), json!({
        "get": op(json!({
            "summary": "List patterns.",
            "responses": {"200": json_response("Every pattern.", json!({"type": "object", "properties": {"patterns": {"type": "array", "items": schema("Pattern")}}}))}
        }), false),
        "post": op(json!({
            "summary": "Register a pattern.",
            "requestBody": pattern_body,
            "responses": {
                "201": json_response("Registered.", schema("Pattern")),
                "400": error_ref("Malformed JSON, or an invalid pattern: details.errors lists each error with its path (e.g. stages[1].where) and column."),
                "409": error_ref("A pattern with this name exists."),
                "413": error_ref("Body larger than the limit."),
                "415": error_ref("Not application/json.")
            }
        }), false)
    }));
    paths.insert("/api/v1/patterns/validate".into(), json!({"post": op(json!({
        "summary": "Validate a pattern without storing it (dry run).",
        "requestBody": pattern_body,
        "responses": {
            "200": json_response("Valid.", json!({"type": "object", "properties": {"valid": {"type": "boolean"}, "name": {"type": "string"}, "exists": {"type": "boolean"}, "automaton": schema("Automaton")}})),
            "400": error_ref("Malformed JSON or invalid pattern, with locations."),
            "413": error_ref("Body larger than the limit."),
            "415": error_ref("Not application/json.")
        }
    }), false)}));
    paths.insert("/api/v1/patterns/{name}".into(), json!({
        "parameters": [pattern_name],
        "get": op(json!({
            "summary": "Read a pattern.",
            "responses": {"200": json_response("The pattern.", schema("Pattern")), "404": error_ref("No such pattern.")}
        }), false),
        "put": op(json!({
            "summary": "Create or replace a pattern. A changed pattern gets the next version; running pipelines switch to it at once, and the old version's partial matches drain (run on to their match or timeout; the default) or restart (are dropped).",
            "parameters": [{"name": "mode", "in": "query", "required": false,
                            "schema": {"type": "string", "enum": ["drain", "restart"], "default": "drain"},
                            "description": "What happens to the old version's partial matches."}],
            "requestBody": pattern_body,
            "responses": {
                "200": json_response("Replaced.", schema("Pattern")),
                "201": json_response("Created.", schema("Pattern")),
                "400": error_ref("Invalid pattern, or its name differs from the path."),
                "413": error_ref("Body larger than the limit."),
                "415": error_ref("Not application/json.")
            }
        }), false),
        "delete": op(json!({
            "summary": "Delete a pattern.",
            "responses": {
                "204": {"description": "Deleted."},
                "404": error_ref("No such pattern."),
                "409": error_ref("A pipeline lists this pattern by name.")
            }
        }), false)
    }));
    paths.insert("/api/v1/pipelines".into(), json!({
        "get": op(json!({
            "summary": "List pipelines.",
            "responses": {"200": json_response("Every pipeline.", json!({"type": "object", "properties": {"pipelines": {"type": "array", "items": schema("Pipeline")}}}))}
        }), false),
        "post": op(json!({
            "summary": "Create a pipeline.",
            "requestBody": pipeline_body,
            "responses": {
                "201": json_response("Created.", schema("Pipeline")),
                "400": error_ref("Malformed JSON."),
                "409": error_ref("A pipeline with this name exists, or the limit of pipelines is reached."),
                "415": error_ref("Not application/json."),
                "422": error_ref("Invalid pipeline (unknown field, wrong type, unknown pattern).")
            }
        }), false)
    }));
    paths.insert("/api/v1/pipelines/{name}".into(), json!({
        "parameters": [pipeline_name],
        "get": op(json!({
            "summary": "Read a pipeline, with its status (paused, watermark, engine statistics).",
            "responses": {"200": json_response("The pipeline.", schema("Pipeline")), "404": error_ref("No such pipeline.")}
        }), false),
        "put": op(json!({
            "summary": "Create or replace a pipeline. A replaced pipeline starts a new engine: its partial matches are dropped; recent outputs and live streams stay.",
            "requestBody": pipeline_body,
            "responses": {
                "200": json_response("Replaced.", schema("Pipeline")),
                "201": json_response("Created.", schema("Pipeline")),
                "400": error_ref("Malformed JSON, or its name differs from the path."),
                "415": error_ref("Not application/json."),
                "422": error_ref("Invalid pipeline.")
            }
        }), false),
        "delete": op(json!({
            "summary": "Delete a pipeline; its live streams end.",
            "responses": {"204": {"description": "Deleted."}, "404": error_ref("No such pipeline.")}
        }), false)
    }));
    for (action, summary) in [
        (
            "pause",
            "Pause intake: events are refused with 409 until resumed.",
        ),
        ("resume", "Resume intake."),
    ] {
        paths.insert(format!("/api/v1/pipelines/{{name}}/{action}"), json!({"post": op(json!({
            "summary": summary,
            "parameters": [name_param("name", "Pipeline name.")],
            "responses": {"200": json_response("The pipeline.", schema("Pipeline")), "404": error_ref("No such pipeline.")}
        }), false)}));
    }
    paths.insert("/api/v1/pipelines/{name}/watermark".into(), json!({"post": op(json!({
        "summary": "Advance the event-time watermark by hand (e.g. at the end of a replay); \"end\" closes every window.",
        "parameters": [name_param("name", "Pipeline name.")],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["watermark"],
            "properties": {"watermark": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["end"]}]}}
        }}}},
        "responses": {
            "200": json_response("The watermark after.", json!({"type": "object"})),
            "404": error_ref("No such pipeline."),
            "409": error_ref("The pipeline is paused."),
            "422": error_ref("Invalid body.")
        }
    }), false)}));
    paths.insert("/api/v1/pipelines/{name}/events".into(), json!({"post": op(json!({
        "summary": "Ingest events: one JSON object, an array of objects, or NDJSON (application/x-ndjson, or detected). Each record is accepted or rejected on its own.",
        "parameters": [name_param("name", "Pipeline name.")],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
            "application/x-ndjson": {"schema": {"type": "string"}}
        }},
        "responses": {
            "202": json_response("Counts, and the index and reason of each rejected record.", schema("IngestReport")),
            "400": error_ref("Empty body, or a body that is neither JSON nor NDJSON."),
            "404": error_ref("No such pipeline."),
            "409": error_ref("The pipeline is paused."),
            "413": error_ref("Body larger than the limit."),
            "415": error_ref("Neither JSON nor NDJSON."),
            "503": error_ref("Shutting down.")
        }
    }), false)}));
    let mut recent_params = output_filters();
    recent_params.push(query_param(
        "limit",
        "At most this many (the most recent); default 100.",
        json!({"type": "integer", "minimum": 0}),
    ));
    paths.insert("/api/v1/pipelines/{name}/matches".into(), json!({"get": op(json!({
        "summary": "Recent outputs (matches, timeouts, late events) from a bounded ring, oldest first.",
        "parameters": recent_params,
        "responses": {
            "200": json_response("Outputs.", json!({"type": "object", "properties": {"pipeline": {"type": "string"}, "outputs": {"type": "array", "items": schema("Output")}}})),
            "400": error_ref("Bad filter."),
            "404": error_ref("No such pipeline.")
        }
    }), false)}));
    paths.insert("/api/v1/pipelines/{name}/matches/stream".into(), json!({"get": op(json!({
        "summary": "Live outputs as Server-Sent Events: event name = kind (match, timeout, late; lagged when the reader fell behind), id = seq, data = the Output JSON.",
        "parameters": output_filters(),
        "responses": {
            "200": {"description": "An event stream.", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": error_ref("Bad filter."),
            "404": error_ref("No such pipeline.")
        }
    }), false)}));
    paths.insert("/api/v1/pipelines/{name}/keys/{key}".into(), json!({"get": op(json!({
        "summary": "The partial matches held for a key now, its events waiting for the watermark, and the pipeline's watermark.",
        "parameters": [name_param("name", "Pipeline name."), name_param("key", "The key (value of key_by).")],
        "responses": {
            "200": json_response("State of the key.", json!({"type": "object", "properties": {
                "pipeline": {"type": "string"}, "key": {"type": "string"},
                "watermark": {"type": ["integer", "null"]},
                "partial_matches": {"type": "array", "items": {"type": "object", "properties": {
                    "pattern": {"type": "string"}, "state": {"type": "string"},
                    "start_timestamp": {"type": "integer"},
                    "times_out_at": {"type": ["integer", "null"], "description": "The end of the pattern's window for this partial match; null without a window."},
                    "events": {"type": "object"}
                }}},
                "waiting_events": {"type": "array", "description": "The key's events waiting for the watermark to pass them, in the order they will be evaluated.", "items": {"type": "object", "properties": {
                    "timestamp": {"type": "integer"}, "event": {"type": "object"}
                }}}
            }})),
            "404": error_ref("No such pipeline.")
        }
    }), false)}));

    paths.insert("/api/v1/try".into(), json!({"post": op(json!({
        "summary": "Run a pattern on sample events and watermark steps without storing anything: the outputs, and after each step the partial matches alive.",
        "requestBody": {"required": true, "content": {"application/json": {"schema": schema("Try")}}},
        "responses": {
            "200": json_response("What the pattern did, step by step.", schema("TryResult")),
            "400": error_ref("Malformed JSON, an invalid pattern (paths under pattern., e.g. pattern.stages[0].where), an unknown registered pattern, or a bad step (e.g. steps[3].event: missing key field 'key'): details.errors lists each with its path."),
            "413": error_ref("Body larger than the limit."),
            "415": error_ref("Not application/json.")
        }
    }), false)}));

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CEP service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Complex event processing with Flink CEP semantics: register patterns, bind them to pipelines, post events, read matches."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required on every endpoint but /healthz and /readyz when the service runs with --auth-token."}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "description": "Machine-readable, e.g. invalid_pattern, not_found, already_exists, paused, payload_too_large."},
                        "message": {"type": "string"},
                        "details": {"description": "E.g. {\"errors\": [{\"path\", \"column\", \"message\"}]} for invalid patterns."}
                    }}}
                },
                "Pattern": {
                    "type": "object", "required": ["name", "stages"],
                    "description": "The JSON pattern format.",
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
                        "within": {"type": "string", "example": "2s"},
                        "after_match": {"type": "string", "example": "skip_past_last_event"},
                        "stages": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string"}, "where": {"type": "string"},
                            "times": {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
                            "consecutive": {"type": "boolean"}, "contiguity": {"type": "string"},
                            "group": {"type": "array", "items": {"type": "object"}}
                        }}}
                    },
                    "example": {"name": "login-failures", "within": "2s", "after_match": "skip_past_last_event", "stages": [{"name": "fail", "where": "type == 'fail'", "times": 3, "consecutive": true}]}
                },
                "Pipeline": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "source": {"oneOf": [
                            {"type": "object", "properties": {"type": {"type": "string", "enum": ["http"]}}},
                            {"type": "object", "required": ["type", "bootstrap", "topics", "group"], "properties": {
                                "type": {"type": "string", "enum": ["kafka"]}, "bootstrap": {"type": "string"},
                                "topics": {"type": "array", "items": {"type": "string"}}, "group": {"type": "string"},
                                "instance_id": {"type": "string"}, "changelog_topic": {"type": "string"},
                                "commit_interval": {"type": "string", "default": "1s"},
                                "options": {"type": "object", "additionalProperties": {"type": "string"}}
                            }}
                        ], "default": {"type": "http"}},
                        "key_by": {"type": "string", "default": "key"},
                        "time": {"type": "object", "properties": {
                            "field": {"type": "string", "default": "ts"},
                            "format": {"type": "string", "enum": ["epoch_ms", "epoch_s", "rfc3339"], "default": "epoch_ms"}
                        }},
                        "watermark": {"type": "object", "properties": {
                            "out_of_orderness": {"type": "string", "default": "0s"},
                            "idleness": {"type": ["string", "null"]}
                        }},
                        "window": {"type": "object", "required": ["type"], "description": "A window stage ahead of the patterns (docs/pipelines.md, Windows).", "properties": {
                            "type": {"type": "string", "enum": ["tumbling", "sliding", "session", "count"]},
                            "size": {"type": ["string", "integer"]}, "slide": {"type": ["string", "integer"]},
                            "gap": {"type": "string"}, "offset": {"type": "string"},
                            "allowed_lateness": {"type": "string", "default": "0s"},
                            "aggregates": {"type": "object", "additionalProperties": {"type": "object", "minProperties": 1, "maxProperties": 1,
                                "propertyNames": {"enum": ["count", "sum", "avg", "min", "max", "first", "last", "count_distinct"]},
                                "additionalProperties": {"type": "string"}}},
                            "patterns": {"oneOf": [{"type": "string", "enum": ["*"]}, {"type": "array", "items": {"type": "string"}}], "default": "*"}
                        }},
                        "patterns": {"oneOf": [{"type": "string", "enum": ["*"]}, {"type": "array", "items": {"type": "string"}}], "default": "*"},
                        "state": {"type": "object", "properties": {
                            "backend": {"type": "string", "enum": ["memory", "rocksdb"], "default": "memory"},
                            "max_keys_in_memory": {"type": "integer"}
                        }},
                        "sinks": {"type": "array", "items": {"oneOf": [
                            {"type": "object", "properties": {"type": {"type": "string", "enum": ["recent"]}}},
                            {"type": "object", "properties": {
                                "type": {"type": "string", "enum": ["kafka"]}, "bootstrap": {"type": "string"},
                                "topic": {"type": "string"}, "matches_topic": {"type": "string"},
                                "timeouts_topic": {"type": "string"}, "late_topic": {"type": "string"},
                                "dead_letter_topic": {"type": "string"},
                                "guarantee": {"type": "string", "enum": ["at_least_once", "exactly_once"], "default": "at_least_once"},
                                "transactional_id": {"type": "string"}
                            }}
                        ]}, "default": [{"type": "recent"}]},
                        "status": {"type": "object", "readOnly": true, "properties": {
                            "paused": {"type": "boolean"}, "watermark": {"type": ["integer", "null"]}, "stats": {"type": "object"},
                            "kafka": {"type": "object", "description": "Kafka sources: state, instance_id, partitions (position, committed, end, lag, max_timestamp), counters."}
                        }}
                    }
                },
                "Automaton": {
                    "type": "object",
                    "description": "The compiled automaton of a pattern.",
                    "properties": {
                        "window": {"type": ["integer", "null"], "description": "The pattern's window, ms."},
                        "matcher": {"type": "string", "enum": ["strict chain", "chain", "loop", "automaton"], "description": "What runs the pattern's keys: a matcher for patterns that never branch (a chain of single-event stages), one for a single loop between two single stages (a, one or more b, then c, relaxed, any skip strategy), both with the same results for less work and memory, or the general automaton."},
                        "states": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "integer"}, "name": {"type": "string"},
                            "stage": {"type": ["string", "null"], "description": "The stage whose events this state takes."},
                            "kind": {"type": "string", "enum": ["start", "normal", "final", "stop", "pending"]},
                            "transitions": {"type": "array", "items": {"type": "object", "properties": {
                                "action": {"type": "string", "enum": ["take", "ignore", "proceed"]},
                                "target": {"type": "integer"},
                                "condition": {"type": "string", "description": "The conditions as the pattern wrote them, combined with and, or, not."}
                            }}}
                        }}}
                    }
                },
                "Try": {
                    "type": "object", "required": ["pattern", "steps"],
                    "properties": {
                        "pattern": {"oneOf": [schema("Pattern"), {"type": "string", "description": "The name of a registered pattern."}]},
                        "key_by": {"type": "string", "default": "key"},
                        "time": {"type": "object", "properties": {
                            "field": {"type": "string", "default": "ts"},
                            "format": {"type": "string", "enum": ["epoch_ms", "epoch_s", "rfc3339"], "default": "epoch_ms"}
                        }},
                        "out_of_orderness": {"type": "string", "default": "0ms"},
                        "steps": {"type": "array", "maxItems": crate::routes::MAX_TRY_STEPS, "items": {"oneOf": [
                            {"type": "object", "required": ["event"], "properties": {"event": {"type": "object"}}},
                            {"type": "object", "required": ["watermark"], "properties": {"watermark": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["end"]}]}}}
                        ]}}
                    },
                    "example": {"pattern": "login-failures", "key_by": "user", "steps": [{"event": {"user": "alice", "ts": 1000, "type": "fail"}}, {"watermark": 5000}]}
                },
                "TryResult": {
                    "type": "object",
                    "properties": {
                        "pattern": {"type": "string"},
                        "outputs": {"type": "array", "items": {"type": "object", "description": "As in GET .../matches, without seq and pipeline."}},
                        "steps": {"type": "array", "items": {"type": "object", "properties": {
                            "step": {"type": "integer"}, "kind": {"type": "string", "enum": ["event", "watermark"]},
                            "key": {"type": "string"}, "timestamp": {"type": "integer"},
                            "watermark": {"type": ["integer", "null"]},
                            "outputs": {"type": "array", "items": {"type": "integer"}, "description": "Indexes into outputs of what this step emitted."},
                            "partial_matches": {"type": "array", "items": {"type": "object", "properties": {
                                "key": {"type": "string"}, "state": {"type": "string"},
                                "start_timestamp": {"type": "integer"}, "times_out_at": {"type": ["integer", "null"]},
                                "events": {"type": "object"}
                            }}}
                        }}},
                        "watermark": {"type": ["integer", "null"]}
                    }
                },
                "IngestReport": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                        "errors": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}}}}
                    }
                },
                "Output": {
                    "type": "object",
                    "properties": {
                        "seq": {"type": "integer"}, "pipeline": {"type": "string"},
                        "kind": {"type": "string", "enum": ["match", "timeout", "late"]},
                        "pattern": {"type": ["string", "null"]}, "key": {"type": "string"},
                        "timestamp": {"type": "integer"},
                        "events": {"type": ["object", "null"], "description": "Stage name -> the events it matched."},
                        "event": {"description": "The late event."}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_route() {
        let doc = document();
        for (method, path) in crate::routes::ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing from the OpenAPI document"
            );
        }
    }
}
