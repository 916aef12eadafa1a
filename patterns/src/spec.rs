//! The JSON pattern format: its serde model, durations, and where errors are.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where an error is: a path into the pattern (`stages[1].where`) and, for conditions, a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternError {
    /// Path into the pattern, e.g. `stages[1].where` (empty: the whole document).
    pub path: String,
    /// 1-based column in the condition (or in the JSON text for syntax errors), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.column) {
            (true, Some(c)) => write!(f, "column {c}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(c)) => write!(f, "{}, column {c}: {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All problems found in a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternErrors(pub Vec<PatternError>);

impl fmt::Display for PatternErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PatternErrors {}

impl PatternErrors {
    pub(crate) fn one(
        path: impl Into<String>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        PatternErrors(vec![PatternError {
            path: path.into(),
            column,
            message: message.into(),
        }])
    }
}

/// A duration, the one grammar of patterns, pipelines, the configuration file and flags:
/// `"500ms"`, `"2s"`, `"1.5s"`, `"15min"` (or `"15m"`), `"1h"`, `"1d"`, or a whole number of
/// milliseconds. Fractions are allowed when the result is a whole number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationMs(pub i64);

impl DurationMs {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<DurationMs, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!("invalid duration '{text}': expected a number with a unit (ms, s, min, h, d), e.g. \"500ms\", \"1.5s\", \"15min\", or a number of milliseconds")
        };
        let factor: i64 = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "min" | "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(bad());
        }
        let too_long = || format!("duration '{text}' is too long");
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let mut ms = whole.checked_mul(factor).ok_or_else(too_long)?;
        // The fraction, digit by digit, in exact integer arithmetic.
        let mut scale = factor;
        let digits = frac.as_bytes();
        for (i, &d) in digits.iter().enumerate() {
            if scale % 10 != 0 {
                if digits[i..].iter().any(|&c| c != b'0') {
                    return Err(format!(
                        "invalid duration '{text}': durations are whole milliseconds"
                    ));
                }
                break;
            }
            scale /= 10;
            ms = ms
                .checked_add(i64::from(d - b'0') * scale)
                .ok_or_else(too_long)?;
        }
        Ok(DurationMs(ms))
    }

    /// The duration in milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl std::str::FromStr for DurationMs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DurationMs::parse(s)
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms != 0 && ms % 86_400_000 == 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms != 0 && ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms % 60_000 == 0 {
            write!(f, "{}min", ms / 60_000)
        } else if ms != 0 && ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for DurationMs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
            Other(serde_json::Value),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(DurationMs(n)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}: a duration cannot be negative"
            ))),
            Raw::Text(t) => DurationMs::parse(&t).map_err(serde::de::Error::custom),
            Raw::Other(v) => Err(serde::de::Error::custom(format!(
                "invalid duration {v}: expected a string such as \"2s\" or a whole number of milliseconds"
            ))),
        }
    }
}

/// `within_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WithinTypeSpec {
    /// From the first event to the last.
    #[default]
    FirstAndLast,
    /// Between each event and the one before it.
    PreviousAndCurrent,
}

/// `after_match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AfterMatchSpec {
    /// Emit every match.
    #[default]
    NoSkip,
    /// Drop partial matches started by the same event.
    SkipToNext,
    /// Drop partial matches started before the match ended.
    SkipPastLastEvent,
    /// Drop partial matches started before the first event of the stage.
    SkipToFirst(String),
    /// Drop partial matches started before the last event of the stage.
    SkipToLast(String),
}

/// `contiguity` of a stage to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContiguitySpec {
    /// Strict.
    Next,
    /// Relaxed (the default).
    FollowedBy,
    /// Non-deterministic relaxed.
    FollowedByAny,
    /// The next event must not match.
    NotNext,
    /// No matching event before the next stage (or the end of the window).
    NotFollowedBy,
}

/// `times`: `3` or `[2, 4]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimesSpec {
    /// Exactly n.
    Exactly(u32),
    /// From, to (inclusive).
    Range(u32, u32),
}

impl Serialize for TimesSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimesSpec::Exactly(n) => s.serialize_u32(*n),
            TimesSpec::Range(a, b) => [*a, *b].serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TimesSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let as_u32 = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        if let Some(n) = as_u32(&v) {
            return Ok(TimesSpec::Exactly(n));
        }
        if let Some(arr) = v.as_array() {
            if arr.len() == 2 {
                if let (Some(a), Some(b)) = (as_u32(&arr[0]), as_u32(&arr[1])) {
                    return Ok(TimesSpec::Range(a, b));
                }
            }
        }
        Err(serde::de::Error::custom(format!(
            "invalid times {v}: expected a whole number such as 3, or a range such as [2, 4]"
        )))
    }
}

/// One stage of a JSON pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique name; events are reported under it.
    pub name: String,
    /// Relation to the previous stage (not on a first stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contiguity: Option<ContiguitySpec>,
    /// Condition (default `true`).
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Stop condition of a looping stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `times(n)` or `times(from, to)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<TimesSpec>,
    /// One or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_or_more: Option<bool>,
    /// n or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times_or_more: Option<u32>,
    /// May be skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Takes as many events as it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<bool>,
    /// The repeated events must be consecutive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<bool>,
    /// Any combination of the repeated events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_combinations: Option<bool>,
    /// Maximum time between consecutive events of a repeated stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap: Option<DurationMs>,
    /// A group: these stages form the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Vec<StageSpec>>,
}

/// A pattern in the JSON format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    /// Unique name of the pattern.
    pub name: String,
    /// Window of the whole pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationMs>,
    /// How the window is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_type: Option<WithinTypeSpec>,
    /// After-match skip strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_match: Option<AfterMatchSpec>,
    /// The stages, in order (at least one).
    pub stages: Vec<StageSpec>,
}

impl PatternSpec {
    /// Parses a pattern from JSON text; errors say where (`stages[1].times`) and what.
    pub fn from_json(text: &str) -> Result<PatternSpec, PatternErrors> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            // serde_json appends " at line L column C"; keep it, it says where in the text.
            let path = if path == "." { String::new() } else { path };
            PatternErrors::one(path, None, msg)
        })
    }

    /// Parses a pattern from a JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<PatternSpec, PatternErrors> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            PatternErrors::one(path, None, e.into_inner().to_string())
        })
    }

    /// The JSON text of the pattern.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(DurationMs::parse("500ms"), Ok(DurationMs(500)));
        assert_eq!(DurationMs::parse("2s"), Ok(DurationMs(2000)));
        assert_eq!(DurationMs::parse("15min"), Ok(DurationMs(900_000)));
        assert_eq!(DurationMs::parse("1h"), Ok(DurationMs(3_600_000)));
        assert_eq!(DurationMs::parse("1d"), Ok(DurationMs(86_400_000)));
        assert_eq!(DurationMs::parse("250"), Ok(DurationMs(250)));
        assert!(DurationMs::parse("2 weeks")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(DurationMs::parse("s").is_err());
        assert_eq!(DurationMs::parse("1.5s"), Ok(DurationMs(1500)));
        assert_eq!(DurationMs::parse("0.25s"), Ok(DurationMs(250)));
        assert_eq!(DurationMs::parse(".5min"), Ok(DurationMs(30_000)));
        assert_eq!(DurationMs::parse("2.0ms"), Ok(DurationMs(2)));
        assert_eq!(DurationMs::parse("5m"), Ok(DurationMs(300_000)));
        assert!(DurationMs::parse("1.5ms")
            .unwrap_err()
            .contains("whole milliseconds"));
        assert!(DurationMs::parse("1.2.3s").is_err());
        assert!(DurationMs::parse(".s").is_err());
        assert!(DurationMs::parse("99999999999999999999d")
            .unwrap_err()
            .contains("too long"));
        assert_eq!(DurationMs(900_000).to_string(), "15min");
    }

    #[test]
    fn errors_name_their_path() {
        let e = PatternSpec::from_json(
            r#"{"name":"x","stages":[{"name":"a"},{"name":"b","times":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "stages[1].times");
        assert!(e.0[0].message.contains("invalid times"), "{e}");
        let e = PatternSpec::from_json(r#"{"name":"x","stages":[{"name":"a","colour":1}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = PatternSpec::from_json(r#"{"stages":[]}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        let e =
            PatternSpec::from_json(r#"{"name":"x","within":"2 weeks","stages":[]}"#).unwrap_err();
        assert_eq!(e.0[0].path, "within");
        let e = PatternSpec::from_json("{\"name\": ").unwrap_err();
        assert!(e.to_string().contains("EOF"), "{e}");
    }

    #[test]
    fn after_match_forms() {
        let p = PatternSpec::from_json(
            r#"{"name":"x","after_match":{"skip_to_first":"b"},"stages":[{"name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(p.after_match, Some(AfterMatchSpec::SkipToFirst("b".into())));
        let p = PatternSpec::from_json(r#"{"name":"x","after_match":"skip_past_last_event","stages":[{"name":"a","times":[2,4]}]}"#).unwrap();
        assert_eq!(p.after_match, Some(AfterMatchSpec::SkipPastLastEvent));
        assert_eq!(p.stages[0].times, Some(TimesSpec::Range(2, 4)));
        let again = PatternSpec::from_json(&p.to_json()).unwrap();
        assert_eq!(again, p);
    }
}
