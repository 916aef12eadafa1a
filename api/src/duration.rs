//! Durations as the API writes them: `"500ms"`, `"2s"`, `"5m"`, `"1h"`, `"7d"`, or a number of
//! milliseconds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub i64);

impl Millis {
    /// Parses `"500ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"`, `"7d"` or `"250"` (milliseconds).
    pub fn parse(text: &str) -> Result<Millis, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let factor: f64 = match unit.trim() {
            "" | "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            other => {
                return Err(format!(
                    "unknown duration unit '{other}' in '{text}' (use ms, s, m, h or d)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a duration (e.g. \"500ms\", \"2s\", \"5m\")"))?;
        let ms = value * factor;
        if !ms.is_finite() || ms > i64::MAX as f64 / 2.0 {
            return Err(format!("duration '{text}' is too long"));
        }
        Ok(Millis(ms.round() as i64))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        if ms != 0 && ms % 86_400_000 == 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms != 0 && ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1_000 == 0 {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Text(String),
        }
        match Repr::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration: a string such as \"2s\" or a number of milliseconds",
            )
        })? {
            Repr::Number(n) => i64::try_from(n)
                .map(Millis)
                .map_err(|_| serde::de::Error::custom("duration is too long")),
            Repr::Text(text) => Millis::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Millis::parse("500ms"), Ok(Millis(500)));
        assert_eq!(Millis::parse("2s"), Ok(Millis(2000)));
        assert_eq!(Millis::parse("1.5s"), Ok(Millis(1500)));
        assert_eq!(Millis::parse("5m"), Ok(Millis(300_000)));
        assert_eq!(Millis::parse("7d"), Ok(Millis(604_800_000)));
        assert_eq!(Millis::parse("250"), Ok(Millis(250)));
        assert!(Millis::parse("2 weeks").is_err());
        assert!(Millis::parse("").is_err());
        assert_eq!(Millis(2000).to_string(), "2s");
        assert_eq!(Millis(1500).to_string(), "1500ms");
        assert_eq!(Millis(0).to_string(), "0s");
        let m: Millis = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(m, Millis(3_600_000));
        let m: Millis = serde_json::from_str("42").unwrap();
        assert_eq!(m, Millis(42));
    }
}
