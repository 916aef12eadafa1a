//! Outputs written as JSON text: the same bytes as `serde_json::to_writer(&output)`, without
//! serde's general path.
//!
//! Every output line of `cep run`, the Kafka pipelines and `cep bench` goes through here. serde's
//! derived serializer escapes each member name, looks up a struct name per event to find that
//! its text is written as is, and escapes each string byte by byte; here the member names are
//! constants, the events' texts are copied, and a string that needs no escape (the pattern,
//! the stage names, nearly every key) is copied after one check. Strings that need escapes go
//! to serde_json's own escaper, so the text stays serde_json's: the test compares both on
//! random outputs.

use crate::engine::{Output, OutputKind};

impl Output {
    /// Appends this output as one JSON object (no newline): the same text as
    /// `serde_json::to_writer`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_open(out);
        out.push(b'}');
    }

    /// Appends this output's JSON object without its closing brace, so that a caller can add
    /// members after the output's own (as `#[serde(flatten)]` of an output would write them)
    /// and close it.
    pub fn write_json_open(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.kind {
            OutputKind::Match => b"{\"kind\":\"match\"",
            OutputKind::Timeout => b"{\"kind\":\"timeout\"",
            OutputKind::Late => b"{\"kind\":\"late\"",
        });
        if let Some(p) = &self.pattern {
            out.extend_from_slice(b",\"pattern\":");
            write_str(out, p);
        }
        out.extend_from_slice(b",\"key\":");
        write_str(out, &self.key);
        out.extend_from_slice(b",\"timestamp\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.timestamp).as_bytes());
        if let Some(events) = &self.events {
            out.extend_from_slice(b",\"events\":{");
            for (i, (stage, evs)) in events.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, stage);
                out.extend_from_slice(b":[");
                for (j, e) in evs.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(e.json().as_bytes());
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        if let Some(e) = &self.event {
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(e.json().as_bytes());
        }
        if self.version != 0 {
            out.extend_from_slice(b",\"version\":");
            out.extend_from_slice(itoa::Buffer::new().format(self.version).as_bytes());
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // No short-circuit, so that the check compiles to a loop without branches per byte.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20 && b != b'"' && b != b'\\'));
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JsonEvent, MatchEvents};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_]{0,12}",
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}a\u{e9}\u{1F600}]{0,8}",
        ]
    }

    fn event() -> impl Strategy<Value = Arc<JsonEvent>> {
        (text(), -1000i64..1000).prop_map(|(s, n)| {
            let v = serde_json::json!({ "s": s, "n": n, "x": [1.5, null, true] });
            Arc::new(JsonEvent::from_value(crate::condition::Row::empty(), &v))
        })
    }

    fn output() -> impl Strategy<Value = Output> {
        let kind = prop_oneof![
            Just(OutputKind::Match),
            Just(OutputKind::Timeout),
            Just(OutputKind::Late)
        ];
        let stages = prop::collection::vec((text(), prop::collection::vec(event(), 0..3)), 0..4);
        (
            kind,
            prop::option::of(text()),
            text(),
            any::<i64>(),
            prop::option::of(stages),
            prop::option::of(event()),
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(|(kind, pattern, key, timestamp, events, event, version)| {
                let events = events.map(|st| {
                    let evs: cep::Events<JsonEvent> =
                        st.into_iter().map(|(s, e)| (Arc::from(s), e)).collect();
                    MatchEvents::from(evs)
                });
                Output {
                    kind,
                    pattern: pattern.map(Arc::from),
                    key,
                    timestamp,
                    events,
                    event,
                    version,
                }
            })
    }

    proptest! {
        #[test]
        fn same_text_as_serde(o in output()) {
            let mut ours = Vec::new();
            o.write_json(&mut ours);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&o).unwrap()
            );
        }

        #[test]
        fn strings_escaped_as_serde_escapes_them(s in text()) {
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
        }
    }

    #[test]
    fn open_then_more_members() {
        let o = Output {
            kind: OutputKind::Match,
            pattern: Some(Arc::from("p")),
            key: "u\"1".into(),
            timestamp: -5,
            events: None,
            event: None,
            version: 2,
        };
        let mut ours = Vec::new();
        o.write_json_open(&mut ours);
        ours.extend_from_slice(b",\"seq\":7}");
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            r#"{"kind":"match","pattern":"p","key":"u\"1","timestamp":-5,"version":2,"seq":7}"#
        );
    }
}
