//! The pipeline spec: one typed description of a pipeline, the same whether it comes from
//! `POST /api/v1/pipelines`, a `[[pipeline]]` table of `cep serve`'s configuration file, the flags
//! of `cep kafka` or those of `cep run`.
//!
//! ```json
//! {
//!   "name": "logins",
//!   "source": {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topics": ["logins"], "group": "cep"},
//!   "key_by": "user",
//!   "time": {"field": "ts", "format": "epoch_ms"},
//!   "watermark": {"out_of_orderness": "1s", "idleness": "5s"},
//!   "patterns": "*",
//!   "sinks": [{"type": "kafka", "topic": "alerts"}, {"type": "recent"}]
//! }
//! ```
//!
//! Every field is documented in `docs/pipelines.md`. Unknown fields are refused; [`parse`] and
//! [`PipelineSpec::validate`] report each problem with the JSON path of the field it is about
//! (`sinks[0].topic`), so that the API can answer 422 with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cep_patterns::{DurationMs, TimeFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The field a Kafka source adds to each event with the record's timestamp (ms), for pipelines
/// whose events carry no time of their own: `"time": {"field": "_kafka_timestamp"}`.
pub const KAFKA_TIMESTAMP_FIELD: &str = "_kafka_timestamp";

/// A pipeline: where events come from, how key and time are read, the watermark, the patterns
/// evaluated and where outputs go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name (taken from the path on PUT).
    #[serde(default)]
    pub name: String,
    /// Where events come from.
    #[serde(default)]
    pub source: SourceSpec,
    /// The field path whose value partitions events into keys (`user.id`, `tags[0]`).
    #[serde(default = "default_key_by")]
    pub key_by: String,
    /// Where the event time is and how it is written.
    #[serde(default)]
    pub time: TimeSpec,
    /// The watermark strategy.
    #[serde(default)]
    pub watermark: WatermarkSpec,
    /// A window stage ahead of the patterns: per key, aggregates over windows of events, each
    /// window's result an event the patterns match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowStageSpec>,
    /// The patterns evaluated: `"*"` (all, the default) or a list of names.
    #[serde(default)]
    pub patterns: PatternSelection,
    /// Where keyed state lives while the pipeline runs.
    #[serde(default)]
    pub state: StateSpec,
    /// How many worker threads evaluate the pipeline's keys (each key on one of them): 1 (the
    /// default) to 64. HTTP and file sources in event time.
    #[serde(default = "one_worker", skip_serializing_if = "is_one_worker")]
    pub workers: usize,
    /// Where matches, timeouts and late events go.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkSpec>,
}

fn one_worker() -> usize {
    1
}

fn is_one_worker(n: &usize) -> bool {
    *n == 1
}

fn default_key_by() -> String {
    "key".to_string()
}

fn default_time_field() -> String {
    "ts".to_string()
}

fn default_sinks() -> Vec<SinkSpec> {
    vec![SinkSpec::Recent]
}

/// Where a pipeline's events come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// Events are posted to `POST /api/v1/pipelines/{name}/events`.
    #[default]
    Http,
    /// A Kafka consumer group reads JSON events from topics.
    Kafka(KafkaSourceSpec),
    /// A file of JSON lines (`-`: standard input), read once: `cep run`.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// A Kafka source.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub bootstrap: String,
    /// The topics events are read from.
    pub topics: Vec<String>,
    /// The consumer group (committed offsets and the changelog are per group).
    pub group: String,
    /// This process's stable identity in the group (static membership: a restarted process takes
    /// its partitions back at once). Default: a `group.instance.id` option, else the sink's
    /// transactional id, else `cep-<group>`. Each process of a group needs its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `static` (the default: the process joins with its `instance_id`; a restart takes its
    /// partitions back at once, a process that leaves for good keeps them until its session
    /// times out) or `dynamic` (no instance id: a clean stop hands the partitions over at once,
    /// a restart waits for the group to rebalance; for processes that come and go).
    #[serde(default)]
    pub membership: Membership,
    /// The topic the state is checkpointed to (default `<group>-cep-changelog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog_topic: Option<String>,
    /// How often outputs, state and offsets are committed.
    #[serde(default = "one_second")]
    pub commit_interval: DurationMs,
    /// Further librdkafka options for the consumer and the producers (`"fetch.min.bytes": "1"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// How a Kafka source is a member of its consumer group.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// A static member (KIP-345), identified by its instance id.
    #[default]
    Static,
    /// A dynamic member.
    Dynamic,
}

fn one_second() -> DurationMs {
    DurationMs(1000)
}

/// Where the event time is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    /// The field path of the event time (default `ts`). A Kafka source adds the record timestamp
    /// as `_kafka_timestamp` when this names it.
    #[serde(default = "default_time_field")]
    pub field: String,
    /// How it is written: `epoch_ms` (default), `epoch_s` or `rfc3339`.
    #[serde(default)]
    pub format: TimeFormat,
    /// `event` (the default: the time is the event's `field`) or `processing` (the time is the
    /// service's clock when the event arrives; `field` and `format` are not read).
    #[serde(default, skip_serializing_if = "TimeMode::is_event")]
    pub mode: TimeMode,
}

impl Default for TimeSpec {
    fn default() -> TimeSpec {
        TimeSpec {
            field: default_time_field(),
            format: TimeFormat::EpochMs,
            mode: TimeMode::Event,
        }
    }
}

/// Which time a pipeline evaluates patterns and windows in.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeMode {
    /// Event time: each event's own time, a watermark, late events (Flink's default).
    #[default]
    Event,
    /// Processing time: events in arrival order, each at the service's clock when it arrives;
    /// `within`, timeouts and windows follow that clock (Flink's processing-time CEP).
    Processing,
}

impl TimeMode {
    fn is_event(&self) -> bool {
        *self == TimeMode::Event
    }
}

/// The watermark strategy: bounded out-of-orderness, plus idleness, and a guard against event
/// times from the far future.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// How far behind the largest timestamp seen the watermark stays.
    #[serde(default)]
    pub out_of_orderness: DurationMs,
    /// An input (the HTTP intake, a Kafka partition) without events for this long is idle: it
    /// stops holding the watermark back, and while every input is idle the watermark follows the
    /// wall clock from where the events left it, so that windows close and timeouts fire without
    /// new events. None: inputs are never idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idleness: Option<DurationMs>,
    /// Events whose time is more than this ahead of the wall clock are refused (one such event,
    /// a client sending nanoseconds say, would move the watermark to the far future and make
    /// every later event late). Default one day; `"off"` for replays of synthetic time.
    #[serde(default = "one_day", with = "optional_duration")]
    pub max_future: Option<DurationMs>,
}

impl Default for WatermarkSpec {
    fn default() -> WatermarkSpec {
        WatermarkSpec {
            out_of_orderness: DurationMs(0),
            idleness: None,
            max_future: one_day(),
        }
    }
}

fn one_day() -> Option<DurationMs> {
    Some(DurationMs(86_400_000))
}

/// A duration, or `"off"` (also `null` in JSON) for none.
mod optional_duration {
    use cep_patterns::DurationMs;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<DurationMs>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DurationMs>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)] // The variants' contents only say which form was written.
        enum Repr {
            Off(Option<Off>),
            Duration(DurationMs),
        }
        #[derive(Deserialize)]
        enum Off {
            #[serde(rename = "off")]
            Off,
        }
        match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"1d\", or \"off\" for no limit")
        })? {
            Repr::Off(_) => Ok(None),
            Repr::Duration(d) => Ok(Some(d)),
        }
    }
}

/// A window stage: Flink's `keyBy(key_by).window(..).allowedLateness(..).aggregate(..)`, whose
/// results the patterns match. Each window result is an event `{<key_by>: key, "window_start",
/// "window_end", <aggregates>}` with event time `window_end - 1` (Flink's timestamp of a window
/// result). Field by field in `docs/pipelines.md` ("Windows").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowStageSpec {
    /// `tumbling`, `sliding`, `session` or `count`.
    #[serde(rename = "type")]
    pub kind: WindowKind,
    /// Tumbling and sliding windows: their length (a duration). Count windows: how many events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WindowSize>,
    /// Sliding windows: how often a window starts (a duration). Count windows: fire every
    /// `slide` events over the last `size` (default: `size`, tumbling count windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<WindowSize>,
    /// Session windows: the gap of inactivity that closes a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<DurationMs>,
    /// Tumbling and sliding windows: shifts window starts (Flink's offset; below the slide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<DurationMs>,
    /// How long after a window's end late events still update it (and fire it again). Events
    /// later than that go to the pipeline's `late` output.
    #[serde(default)]
    pub allowed_lateness: DurationMs,
    /// The aggregates of each window result, by the name they get in it:
    /// `{"avg_temp": {"avg": "temperature"}}`.
    #[serde(default)]
    pub aggregates: BTreeMap<String, AggregateSpec>,
    /// Which of the pipeline's patterns match the window results: `"*"` (the default: all of
    /// them) or a list of names. The pipeline's other patterns match the events themselves, so
    /// one pipeline can watch both (the sensor alarm: rising readings and hot averages).
    #[serde(default)]
    pub patterns: PatternSelection,
}

/// The kind of a window stage.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows aligned to the epoch (plus offset).
    Tumbling,
    /// Fixed-size windows starting every `slide`.
    Sliding,
    /// Runs of events separated by at least `gap`; windows that come to touch merge.
    Session,
    /// Every `size` events of a key (or the last `size` every `slide` events).
    Count,
}

impl WindowKind {
    fn name(self) -> &'static str {
        match self {
            WindowKind::Tumbling => "tumbling",
            WindowKind::Sliding => "sliding",
            WindowKind::Session => "session",
            WindowKind::Count => "count",
        }
    }
}

/// A window's size or slide: a duration (`"10s"`, or whole milliseconds) for time windows, a
/// number of events for count windows. A whole number is read as a count, which a time window
/// takes as milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSize {
    /// A whole number.
    Count(u64),
    /// A duration written as text.
    Duration(DurationMs),
}

impl WindowSize {
    /// As a duration (a whole number is milliseconds).
    pub fn as_ms(self) -> i64 {
        match self {
            WindowSize::Count(n) => i64::try_from(n).unwrap_or(i64::MAX),
            WindowSize::Duration(d) => d.0,
        }
    }
}

impl Serialize for WindowSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WindowSize::Count(n) => s.serialize_u64(*n),
            WindowSize::Duration(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for WindowSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WindowSize, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) if n.as_u64().is_some() => {
                Ok(WindowSize::Count(n.as_u64().unwrap_or(0)))
            }
            serde_json::Value::String(t) => DurationMs::parse(&t)
                .map(WindowSize::Duration)
                .map_err(serde::de::Error::custom),
            v => Err(serde::de::Error::custom(format!(
                "invalid size {v}: expected a duration such as \"10s\" or a whole number"
            ))),
        }
    }
}

/// One aggregate of a window result: its function and the field path it reads
/// (`{"avg": "temperature"}`; `{"count": "*"}` counts events).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AggregateSpec {
    /// Events (`"*"`), or events where the field is present and not `null`.
    Count(String),
    /// The sum of the field's numbers (0 for none).
    Sum(String),
    /// The mean of the field's numbers (`null` for none).
    Avg(String),
    /// The smallest of the field's numbers (`null` for none).
    Min(String),
    /// The largest of the field's numbers (`null` for none).
    Max(String),
    /// The field's value in the earliest event (event time, then arrival) that has it.
    First(String),
    /// The field's value in the latest event (event time, then arrival) that has it.
    Last(String),
    /// How many distinct values (not `null`) the field takes.
    CountDistinct(String),
}

impl AggregateSpec {
    /// The function's name, as written in the spec.
    pub fn function(&self) -> &'static str {
        match self {
            AggregateSpec::Count(_) => "count",
            AggregateSpec::Sum(_) => "sum",
            AggregateSpec::Avg(_) => "avg",
            AggregateSpec::Min(_) => "min",
            AggregateSpec::Max(_) => "max",
            AggregateSpec::First(_) => "first",
            AggregateSpec::Last(_) => "last",
            AggregateSpec::CountDistinct(_) => "count_distinct",
        }
    }

    /// The field path it reads (`*` for a count of events).
    pub fn field(&self) -> &str {
        match self {
            AggregateSpec::Count(f)
            | AggregateSpec::Sum(f)
            | AggregateSpec::Avg(f)
            | AggregateSpec::Min(f)
            | AggregateSpec::Max(f)
            | AggregateSpec::First(f)
            | AggregateSpec::Last(f)
            | AggregateSpec::CountDistinct(f) => f,
        }
    }
}

impl WindowStageSpec {
    /// The stage the command-line flags describe: `window` as `tumbling:10s`,
    /// `sliding:10s:5s`, `session:30s`, `count:100` or `count:100:10`, and each aggregate as
    /// `name=function:field` (`avg_temp=avg:temperature`, `n=count:*`). The result still goes
    /// through [`PipelineSpec::validate`]. `patterns`: the names of the patterns over window
    /// results (none: all).
    pub fn from_flags(
        window: &str,
        aggregates: &[String],
        allowed_lateness: DurationMs,
        patterns: &[String],
    ) -> Result<WindowStageSpec, String> {
        let mut parts = window.split(':');
        let kind = match parts.next().unwrap_or("").trim() {
            "tumbling" => WindowKind::Tumbling,
            "sliding" => WindowKind::Sliding,
            "session" => WindowKind::Session,
            "count" => WindowKind::Count,
            other => {
                return Err(format!(
                    "--window: unknown window '{other}' (tumbling:SIZE, sliding:SIZE:SLIDE, \
                     session:GAP, count:N or count:N:SLIDE)"
                ))
            }
        };
        let args: Vec<&str> = parts.map(str::trim).collect();
        let size = |t: &str| -> Result<WindowSize, String> {
            match t.parse::<u64>() {
                Ok(n) => Ok(WindowSize::Count(n)),
                Err(_) => DurationMs::parse(t)
                    .map(WindowSize::Duration)
                    .map_err(|e| format!("--window: {e}")),
            }
        };
        let wants = match kind {
            WindowKind::Tumbling | WindowKind::Session => 1..=1,
            WindowKind::Sliding => 2..=2,
            WindowKind::Count => 1..=2,
        };
        if !wants.contains(&args.len()) {
            return Err(format!(
                "--window: {window}: expected {}",
                match kind {
                    WindowKind::Tumbling => "tumbling:SIZE (tumbling:10s)",
                    WindowKind::Sliding => "sliding:SIZE:SLIDE (sliding:10s:5s)",
                    WindowKind::Session => "session:GAP (session:30s)",
                    WindowKind::Count => "count:N or count:N:SLIDE (count:100:10)",
                }
            ));
        }
        let mut spec = WindowStageSpec {
            kind,
            size: None,
            slide: None,
            gap: None,
            offset: None,
            allowed_lateness,
            aggregates: BTreeMap::new(),
            patterns: if patterns.is_empty() {
                PatternSelection::All
            } else {
                PatternSelection::Names(patterns.to_vec())
            },
        };
        if kind == WindowKind::Session {
            spec.gap = Some(DurationMs::parse(args[0]).map_err(|e| format!("--window: {e}"))?);
        } else {
            spec.size = Some(size(args[0])?);
            spec.slide = args.get(1).map(|t| size(t)).transpose()?;
        }
        for a in aggregates {
            let bad = || {
                format!(
                    "--aggregate: expected NAME=FUNCTION:FIELD (avg_temp=avg:temperature), \
                     not '{a}'"
                )
            };
            let (name, rest) = a.split_once('=').ok_or_else(bad)?;
            let (function, field) = rest.split_once(':').ok_or_else(bad)?;
            let value = serde_json::json!({ function.trim(): field.trim() });
            let aggregate: AggregateSpec = serde_json::from_value(value).map_err(|_| {
                format!(
                    "--aggregate {a}: unknown function '{}' (count, sum, avg, min, max, first, \
                     last, count_distinct)",
                    function.trim()
                )
            })?;
            if spec
                .aggregates
                .insert(name.trim().to_string(), aggregate)
                .is_some()
            {
                return Err(format!("--aggregate: '{}' is named twice", name.trim()));
            }
        }
        Ok(spec)
    }
}

/// The longest window size, slide, gap, offset or allowed lateness: 100 years (window bounds are
/// computed in milliseconds and must not overflow).
pub const MAX_WINDOW_SPAN_MS: i64 = 100 * 365 * 86_400_000;

/// How many sliding windows one event may belong to (`size / slide`): each is state and a
/// result.
pub const MAX_WINDOWS_PER_EVENT: i64 = 1000;

/// The fields every window result has besides the key and the aggregates.
pub const WINDOW_FIELDS: [&str; 2] = ["window_start", "window_end"];

impl WindowStageSpec {
    /// Checks what serde cannot; paths start with `window`.
    fn validate(&self, key_by: &str, selected: &PatternSelection, errors: &mut Vec<SpecError>) {
        let kind = self.kind.name();
        let duration = |errors: &mut Vec<SpecError>, field: &str, v: Option<WindowSize>| {
            if let Some(v) = v {
                if v.as_ms() <= 0 {
                    errors.push(SpecError::new(
                        format!("window.{field}"),
                        "must be at least 1ms",
                    ));
                }
            }
        };
        let forbid = |errors: &mut Vec<SpecError>, field: &str, present: bool| {
            if present {
                errors.push(SpecError::new(
                    format!("window.{field}"),
                    format!("a {kind} window has no {field}"),
                ));
            }
        };
        let require = |errors: &mut Vec<SpecError>, field: &str, present: bool, what: &str| {
            if !present {
                errors.push(SpecError::new(
                    format!("window.{field}"),
                    format!("a {kind} window needs a {field} ({what})"),
                ));
            }
        };
        match self.kind {
            WindowKind::Tumbling | WindowKind::Sliding => {
                require(
                    errors,
                    "size",
                    self.size.is_some(),
                    "a duration such as \"10s\"",
                );
                duration(errors, "size", self.size);
                if self.kind == WindowKind::Sliding {
                    require(
                        errors,
                        "slide",
                        self.slide.is_some(),
                        "a duration such as \"5s\"",
                    );
                    duration(errors, "slide", self.slide);
                } else {
                    forbid(errors, "slide", self.slide.is_some());
                }
                forbid(errors, "gap", self.gap.is_some());
                let period = self.slide.or(self.size).map_or(0, WindowSize::as_ms);
                if let Some(offset) = self.offset {
                    if period > 0 && offset.0 >= period {
                        errors.push(SpecError::new(
                            "window.offset",
                            format!(
                                "must be below the window's {} ({})",
                                if self.kind == WindowKind::Sliding {
                                    "slide"
                                } else {
                                    "size"
                                },
                                DurationMs(period)
                            ),
                        ));
                    }
                }
            }
            WindowKind::Session => {
                require(
                    errors,
                    "gap",
                    self.gap.is_some(),
                    "a duration such as \"30s\"",
                );
                if self.gap.is_some_and(|g| g.0 <= 0) {
                    errors.push(SpecError::new("window.gap", "must be at least 1ms"));
                }
                forbid(errors, "size", self.size.is_some());
                forbid(errors, "slide", self.slide.is_some());
                forbid(errors, "offset", self.offset.is_some());
            }
            WindowKind::Count => {
                require(errors, "size", self.size.is_some(), "a number of events");
                for (field, v) in [("size", self.size), ("slide", self.slide)] {
                    match v {
                        Some(WindowSize::Duration(_)) => errors.push(SpecError::new(
                            format!("window.{field}"),
                            "a count window counts events: a whole number such as 100",
                        )),
                        Some(WindowSize::Count(0)) => errors.push(SpecError::new(
                            format!("window.{field}"),
                            "must be at least 1",
                        )),
                        _ => {}
                    }
                }
                forbid(errors, "gap", self.gap.is_some());
                forbid(errors, "offset", self.offset.is_some());
                if self.allowed_lateness.0 != 0 {
                    errors.push(SpecError::new(
                        "window.allowed_lateness",
                        "count windows take every event in arrival order: they have no lateness",
                    ));
                }
            }
        }
        if self.kind != WindowKind::Count {
            let spans = [
                ("size", self.size.map(WindowSize::as_ms)),
                ("slide", self.slide.map(WindowSize::as_ms)),
                ("gap", self.gap.map(|d| d.0)),
                ("offset", self.offset.map(|d| d.0)),
                ("allowed_lateness", Some(self.allowed_lateness.0)),
            ];
            for (field, v) in spans {
                if v.is_some_and(|v| v > MAX_WINDOW_SPAN_MS) {
                    errors.push(SpecError::new(
                        format!("window.{field}"),
                        "must be at most 100 years",
                    ));
                }
            }
        }
        if let (WindowKind::Sliding, Some(size), Some(slide)) = (self.kind, self.size, self.slide) {
            let (size, slide) = (size.as_ms(), slide.as_ms());
            // size / slide, rounded up (both positive here, or refused above).
            let per_event = if slide > 0 { (size - 1) / slide + 1 } else { 0 };
            if per_event > MAX_WINDOWS_PER_EVENT {
                errors.push(SpecError::new(
                    "window.slide",
                    format!(
                        "puts each event in {} windows (size / slide); at most \
                         {MAX_WINDOWS_PER_EVENT}",
                        per_event
                    ),
                ));
            }
        }
        let key_top = key_by.split(['.', '[']).next().unwrap_or(key_by);
        for (name, aggregate) in &self.aggregates {
            let at = format!("window.aggregates.{name}");
            if name.trim().is_empty() {
                errors.push(SpecError::new(&at, "an aggregate needs a name"));
            } else if WINDOW_FIELDS.contains(&name.as_str()) || name == key_top {
                errors.push(SpecError::new(
                    &at,
                    format!("'{name}' is a field every window result has already"),
                ));
            }
            let field = aggregate.field();
            let path = format!("{at}.{}", aggregate.function());
            if matches!(aggregate, AggregateSpec::Count(_)) && field == "*" {
                continue;
            }
            if let Err(e) = cep_patterns::FieldPath::parse(field) {
                errors.push(SpecError::new(path, e));
            } else {
                check_path(errors, &path, field);
            }
        }
        if let PatternSelection::Names(names) = &self.patterns {
            if names.is_empty() {
                errors.push(SpecError::new(
                    "window.patterns",
                    "name at least one pattern, or \"*\" for all",
                ));
            }
            for (i, n) in names.iter().enumerate() {
                if !selected.includes(n) {
                    errors.push(SpecError::new(
                        format!("window.patterns[{i}]"),
                        format!("'{n}' is not one of the pipeline's patterns"),
                    ));
                }
            }
        }
    }
}

/// Where keyed state lives while the pipeline runs (it is checkpointed either way).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// `memory` (default) or `rocksdb`.
    #[serde(default)]
    pub backend: StateBackend,
    /// With `rocksdb`: how many keys' state stay in memory; the least recently used others live
    /// in RocksDB only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_in_memory: Option<usize>,
    /// With `rocksdb`: the directory (default: under the service's data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Partial matches per key and pattern; beyond it the oldest are dropped (counted in
    /// `stats.dropped_partial_matches`). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_partial_matches: Option<usize>,
    /// Keys with state; a new key beyond it drops the least recently active tenth of the keys
    /// (counted in `stats.evicted_keys`). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
    /// Events a key keeps per pattern in the shared buffer (those its partial matches hold);
    /// beyond it its oldest partial matches are dropped until it is within (counted in
    /// `stats.dropped_partial_matches`). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffered_events: Option<usize>,
    /// A key without events for this long (in event time: its latest event this far behind the
    /// watermark) is dropped with its partial matches, not reported as timeouts (counted in
    /// `stats.expired_keys`). None: keys stay while they hold something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ttl: Option<DurationMs>,
}

impl StateSpec {
    /// The engine's bounds.
    pub fn bounds(&self) -> cep_patterns::StateBounds {
        cep_patterns::StateBounds {
            max_partial_matches: self.max_partial_matches,
            max_keys: self.max_keys,
            key_ttl: self.key_ttl.map(|d| d.0),
            max_buffered_events: self.max_buffered_events,
        }
    }
}

/// A state backend.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// All keyed state in memory.
    #[default]
    Memory,
    /// Keyed state in RocksDB, the most recently used keys cached in memory.
    Rocksdb,
}

/// Where a pipeline's outputs go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkSpec {
    /// The ring of recent outputs (`GET .../matches`) and its live stream (SSE).
    Recent,
    /// Kafka topics.
    Kafka(KafkaSinkSpec),
    /// A file of JSON lines (`-`: standard output): `cep run`.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// A Kafka sink. With only `topic`, every output kind goes there (each record says its `kind`);
/// the per-kind topics override it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// Bootstrap servers: the Kafka source's (the default; outputs, state and offsets are
    /// committed together, so they must be one cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// The topic of every output kind without a topic of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches_topic: Option<String>,
    /// Timed-out partial matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts_topic: Option<String>,
    /// Late events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_topic: Option<String>,
    /// Records that cannot be read, as `{"reason","topic","partition","offset","key","value"}`
    /// (default: logged and skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// `at_least_once` (default) or `exactly_once` (transactions).
    #[serde(default)]
    pub guarantee: Guarantee,
    /// The transactional id of `exactly_once` (default `cep-<group>`): one per process, the same
    /// across its restarts (a restart fences the old process and aborts its open transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

impl KafkaSinkSpec {
    /// The topic of matches, timeouts and late events (None: not written).
    pub fn topic_of(&self, kind: cep_patterns::OutputKind) -> Option<&str> {
        use cep_patterns::OutputKind as K;
        let own = match kind {
            K::Match => &self.matches_topic,
            K::Timeout => &self.timeouts_topic,
            K::Late => &self.late_topic,
        };
        own.as_deref().or(self.topic.as_deref())
    }
}

/// A delivery guarantee.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Outputs are acknowledged before offsets are committed; after a crash, outputs since the
    /// last commit are produced again (with the same `cep-output-id` header).
    #[default]
    AtLeastOnce,
    /// Outputs and offsets are committed in one transaction; read with `isolation.level =
    /// read_committed`, each output appears once.
    ExactlyOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;
    fn from_str(text: &str) -> Result<Guarantee, String> {
        match text.trim().replace('-', "_").as_str() {
            "at_least_once" => Ok(Guarantee::AtLeastOnce),
            "exactly_once" => Ok(Guarantee::ExactlyOnce),
            _ => Err(format!(
                "unknown guarantee '{text}' (at-least-once or exactly-once)"
            )),
        }
    }
}

/// The patterns a pipeline evaluates.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PatternSelection {
    /// Every registered pattern, including those registered later.
    #[default]
    All,
    /// These patterns.
    Names(Vec<String>),
}

impl PatternSelection {
    /// Whether the pattern `name` is selected.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            PatternSelection::All => true,
            PatternSelection::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

impl Serialize for PatternSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PatternSelection::All => serializer.serialize_str("*"),
            PatternSelection::Names(names) => names.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PatternSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PatternSelection, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Names(Vec<String>),
        }
        const EXPECTED: &str = "patterns must be \"*\" or a list of pattern names";
        match Repr::deserialize(deserializer).map_err(|_| serde::de::Error::custom(EXPECTED))? {
            Repr::Text(t) if t == "*" => Ok(PatternSelection::All),
            Repr::Text(_) => Err(serde::de::Error::custom(EXPECTED)),
            Repr::Names(names) => Ok(PatternSelection::Names(names)),
        }
    }
}

/// One problem with a spec, and the JSON path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// `sinks[0].topic`; empty for the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Reads a spec from JSON and validates it; every error carries its field's path.
pub fn parse(value: serde_json::Value) -> Result<PipelineSpec, Vec<SpecError>> {
    let spec: PipelineSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![SpecError::new(path, e.into_inner().to_string())]
    })?;
    spec.validate()?;
    Ok(spec)
}

/// Where a spec runs: a few combinations only make sense in one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// `cep serve`.
    Service,
    /// `cep run` / `cep kafka`: one pipeline in its own process.
    Command,
}

impl PipelineSpec {
    /// The default pipeline of `cep serve`: HTTP source, key `key`, time `ts` (ms), all patterns,
    /// outputs to the recent buffer.
    pub fn default_named(name: &str) -> PipelineSpec {
        PipelineSpec {
            name: name.to_string(),
            source: SourceSpec::Http,
            key_by: default_key_by(),
            time: TimeSpec::default(),
            watermark: WatermarkSpec::default(),
            window: None,
            patterns: PatternSelection::All,
            state: StateSpec::default(),
            workers: 1,
            sinks: default_sinks(),
        }
    }

    /// An engine for this spec and `patterns` (key, time, out-of-orderness, the future guard).
    pub fn engine(
        &self,
        patterns: Vec<std::sync::Arc<cep_patterns::CompiledPattern>>,
    ) -> Result<cep_patterns::JsonEngine, cep_patterns::PatternErrors> {
        let mut engine = cep_patterns::JsonEngine::new(self.engine_config(), patterns)?;
        engine.set_max_future(self.watermark.max_future.map(|d| d.0));
        engine.set_bounds(self.state.bounds());
        Ok(engine)
    }

    /// The engine configuration: what the engine reads from each event.
    pub fn engine_config(&self) -> cep_patterns::EngineConfig {
        cep_patterns::EngineConfig {
            key_by: self.key_by.clone(),
            time_field: self.time.field.clone(),
            time_format: self.time.format,
            out_of_orderness_ms: self.watermark.out_of_orderness.0,
        }
    }

    /// The Kafka sink, if any.
    pub fn kafka_sink(&self) -> Option<&KafkaSinkSpec> {
        self.sinks.iter().find_map(|s| match s {
            SinkSpec::Kafka(k) => Some(k),
            _ => None,
        })
    }

    /// Whether outputs go to the recent buffer.
    pub fn has_recent_sink(&self) -> bool {
        self.sinks.iter().any(|s| matches!(s, SinkSpec::Recent))
    }

    /// Checks what serde cannot: field paths, combinations of source and sinks.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        check_path(&mut errors, "key_by", &self.key_by);
        check_path(&mut errors, "time.field", &self.time.field);
        let kafka_source = matches!(self.source, SourceSpec::Kafka(_));
        if let SourceSpec::Kafka(k) = &self.source {
            if k.bootstrap.trim().is_empty() {
                errors.push(SpecError::new("source.bootstrap", "must not be empty"));
            }
            if k.group.trim().is_empty() {
                errors.push(SpecError::new("source.group", "must not be empty"));
            }
            if k.topics.is_empty() {
                errors.push(SpecError::new("source.topics", "name at least one topic"));
            }
            for (i, t) in k.topics.iter().enumerate() {
                if t.trim().is_empty() {
                    errors.push(SpecError::new(
                        format!("source.topics[{i}]"),
                        "must not be empty",
                    ));
                }
            }
            if k.commit_interval.0 == 0 {
                errors.push(SpecError::new(
                    "source.commit_interval",
                    "must be at least 1ms",
                ));
            }
        }
        if self.time.mode == TimeMode::Processing {
            match self.source {
                SourceSpec::Http | SourceSpec::Kafka(_) => {}
                SourceSpec::File { .. } => errors.push(SpecError::new(
                    "time.mode",
                    "a file is replayed in event time: processing time is for live sources (http, kafka)",
                )),
            }
            if self.watermark.out_of_orderness.0 != 0 {
                errors.push(SpecError::new(
                    "watermark.out_of_orderness",
                    "processing time has no out-of-order events: events are taken as they arrive",
                ));
            }
            if self.watermark.idleness.is_some() {
                errors.push(SpecError::new(
                    "watermark.idleness",
                    "processing time follows the clock whether events come or not",
                ));
            }
        }
        if self.time.field == KAFKA_TIMESTAMP_FIELD && !kafka_source {
            errors.push(SpecError::new(
                "time.field",
                format!("{KAFKA_TIMESTAMP_FIELD} is the record timestamp of a Kafka source; this pipeline has none"),
            ));
        }
        if let PatternSelection::Names(names) = &self.patterns {
            if names.is_empty() {
                errors.push(SpecError::new(
                    "patterns",
                    "name at least one pattern, or \"*\" for all",
                ));
            }
        }
        if let Some(window) = &self.window {
            window.validate(&self.key_by, &self.patterns, &mut errors);
            if kafka_source && self.state.backend == StateBackend::Rocksdb {
                errors.push(SpecError::new(
                    "state.backend",
                    "a Kafka pipeline with a window stage keeps its state in memory \
                     (checkpointed to the changelog): the rocksdb backend does not take window \
                     state",
                ));
            }
        }
        if self.state.backend == StateBackend::Rocksdb && !kafka_source {
            errors.push(SpecError::new(
                "state.backend",
                "the rocksdb state backend is available to Kafka sources",
            ));
        }
        for (path, bound) in [
            ("state.max_keys_in_memory", self.state.max_keys_in_memory),
            ("state.max_partial_matches", self.state.max_partial_matches),
            ("state.max_keys", self.state.max_keys),
            ("state.max_buffered_events", self.state.max_buffered_events),
        ] {
            if bound == Some(0) {
                errors.push(SpecError::new(path, "must be at least 1"));
            }
        }
        if self.workers == 0 || self.workers > crate::shards::MAX_WORKERS {
            errors.push(SpecError::new(
                "workers",
                format!("must be 1 to {}", crate::shards::MAX_WORKERS),
            ));
        } else if self.workers > 1 {
            if kafka_source {
                errors.push(SpecError::new(
                    "workers",
                    "a Kafka pipeline spreads over the processes of its consumer group, not over \
                     workers: 1",
                ));
            }
            if self.time.mode == TimeMode::Processing {
                errors.push(SpecError::new(
                    "workers",
                    "processing time runs on one worker: 1",
                ));
            }
        }
        if self.state.key_ttl.is_some_and(|d| d.0 <= 0) {
            errors.push(SpecError::new("state.key_ttl", "must be positive"));
        }
        if kafka_source && self.state.backend == StateBackend::Rocksdb {
            // Keys the RocksDB backend keeps on disk are out of the engine's sight: it can
            // neither count nor expire them.
            for (set, path) in [
                (self.state.max_keys.is_some(), "state.max_keys"),
                (self.state.key_ttl.is_some(), "state.key_ttl"),
            ] {
                if set {
                    errors.push(SpecError::new(
                        path,
                        "not with the rocksdb state backend of a Kafka pipeline (keys kept on disk \
                         are neither counted nor expired; max_keys_in_memory bounds memory): use \
                         the memory backend, or max_partial_matches",
                    ));
                }
            }
        }
        if self.sinks.is_empty() {
            errors.push(SpecError::new("sinks", "name at least one sink"));
        }
        let mut seen = Vec::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let kind = match sink {
                SinkSpec::Recent => "recent",
                SinkSpec::Kafka(_) => "kafka",
                SinkSpec::File { .. } => "file",
            };
            if seen.contains(&kind) {
                errors.push(SpecError::new(
                    format!("sinks[{i}]"),
                    format!("a second {kind} sink"),
                ));
            }
            seen.push(kind);
            if let SinkSpec::Kafka(k) = sink {
                if let (SourceSpec::Kafka(source), Some(b)) = (&self.source, &k.bootstrap) {
                    if b != &source.bootstrap {
                        errors.push(SpecError::new(
                            format!("sinks[{i}].bootstrap"),
                            "must be the source's cluster: outputs, state and offsets are committed together",
                        ));
                    }
                }
                if !kafka_source {
                    errors.push(SpecError::new(
                        format!("sinks[{i}]"),
                        "a kafka sink needs a kafka source (outputs are committed with the input offsets)",
                    ));
                }
                let any = [&k.topic, &k.matches_topic, &k.timeouts_topic, &k.late_topic]
                    .iter()
                    .any(|t| t.is_some());
                if !any {
                    errors.push(SpecError::new(
                        format!("sinks[{i}].topic"),
                        "name a topic for the outputs (topic, or matches_topic / timeouts_topic / late_topic)",
                    ));
                }
                for (field, topic) in [
                    ("topic", &k.topic),
                    ("matches_topic", &k.matches_topic),
                    ("timeouts_topic", &k.timeouts_topic),
                    ("late_topic", &k.late_topic),
                    ("dead_letter_topic", &k.dead_letter_topic),
                ] {
                    if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
                        errors.push(SpecError::new(
                            format!("sinks[{i}].{field}"),
                            "must not be empty",
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Like [`validate`](Self::validate), plus what only one host can run.
    pub fn validate_for(&self, host: Host) -> Result<(), Vec<SpecError>> {
        let mut errors = self.validate().err().unwrap_or_default();
        if host == Host::Service {
            if matches!(self.source, SourceSpec::File { .. }) {
                errors.push(SpecError::new(
                    "source",
                    "file sources are read by `cep run`; the service takes http or kafka",
                ));
            }
            for (i, s) in self.sinks.iter().enumerate() {
                if matches!(s, SinkSpec::File { .. }) {
                    errors.push(SpecError::new(
                        format!("sinks[{i}]"),
                        "file sinks are written by `cep run`; the service takes recent or kafka",
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn check_path(errors: &mut Vec<SpecError>, field: &str, path: &str) {
    if path.is_empty() || path.len() > 256 {
        errors.push(SpecError::new(
            field,
            "must be a field path of 1 to 256 characters",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(value: serde_json::Value) -> Vec<SpecError> {
        parse(value).unwrap_err()
    }

    #[test]
    fn defaults_and_selection() {
        let spec = parse(json!({"name": "p"})).unwrap();
        assert_eq!(spec, PipelineSpec::default_named("p"));
        let spec =
            parse(json!({"patterns": ["a"], "watermark": {"out_of_orderness": "1.5s"}})).unwrap();
        assert!(spec.patterns.includes("a"));
        assert!(!spec.patterns.includes("b"));
        assert_eq!(spec.watermark.out_of_orderness, DurationMs(1500));
        let text = serde_json::to_string(&PipelineSpec::default_named("d")).unwrap();
        assert!(text.contains("\"patterns\":\"*\""), "{text}");
        let back: PipelineSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, PipelineSpec::default_named("d"));
    }

    #[test]
    fn state_bounds_are_read_and_checked_where_they_are() {
        let spec = parse(
            json!({"state": {"max_partial_matches": 100, "max_keys": 1000000,
                                          "key_ttl": "1h", "max_buffered_events": 500}}),
        )
        .unwrap();
        assert_eq!(
            spec.state.bounds(),
            cep_patterns::StateBounds {
                max_partial_matches: Some(100),
                max_keys: Some(1_000_000),
                key_ttl: Some(3_600_000),
                max_buffered_events: Some(500),
            }
        );
        let paths = |v| {
            errors(v)
                .into_iter()
                .map(|e| e.path)
                .collect::<Vec<String>>()
        };
        assert_eq!(
            paths(
                json!({"state": {"max_partial_matches": 0, "max_keys": 0, "key_ttl": "0ms",
                                   "max_buffered_events": 0}})
            ),
            [
                "state.max_partial_matches",
                "state.max_keys",
                "state.max_buffered_events",
                "state.key_ttl"
            ]
        );
        // A Kafka pipeline takes them with the memory backend; with RocksDB, keys on disk are out
        // of the engine's sight: only max_partial_matches.
        let kafka = json!({"type": "kafka", "bootstrap": "b:9092", "topics": ["t"], "group": "g"});
        let on_kafka = parse(json!({"source": kafka,
            "state": {"max_partial_matches": 5, "max_keys": 10, "key_ttl": "1h"}}))
        .unwrap();
        assert_eq!(on_kafka.state.bounds().max_keys, Some(10));
        assert_eq!(
            paths(json!({"source": kafka, "state": {"backend": "rocksdb",
                "max_partial_matches": 5, "max_keys": 10, "key_ttl": "1h"}})),
            ["state.max_keys", "state.key_ttl"]
        );
    }

    #[test]
    fn a_kafka_pipeline_round_trips() {
        let value = json!({
            "name": "k",
            "source": {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topics": ["in"], "group": "g",
                       "options": {"fetch.min.bytes": "1"}},
            "key_by": "user",
            "time": {"field": "at", "format": "rfc3339"},
            "sinks": [{"type": "kafka", "topic": "alerts", "guarantee": "exactly_once"}, {"type": "recent"}]
        });
        let spec = parse(value).unwrap();
        let SourceSpec::Kafka(k) = &spec.source else {
            panic!("not kafka: {:?}", spec.source)
        };
        assert_eq!(k.commit_interval, DurationMs(1000));
        let sink = spec.kafka_sink().unwrap();
        assert_eq!(sink.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(
            sink.topic_of(cep_patterns::OutputKind::Timeout),
            Some("alerts")
        );
        assert!(spec.has_recent_sink());
        assert_eq!(spec.time.format, TimeFormat::Rfc3339);
        let again = parse(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn errors_name_the_field() {
        let e = errors(json!({"watermark": {"out_of_orderness": "2 weeks"}}));
        assert_eq!(e[0].path, "watermark.out_of_orderness");
        assert!(e[0].message.contains("invalid duration"), "{e:?}");
        let e = errors(json!({"sinks": [{"type": "recent"}, {"type": "kafka", "topik": "x"}]}));
        assert_eq!(e[0].path, "sinks[1]");
        assert!(e[0].message.contains("topik"), "{e:?}");
        let e = errors(
            json!({"source": {"type": "kafka", "bootstrap": "b", "topics": [], "group": "g"},
                              "sinks": [{"type": "kafka"}]}),
        );
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["source.topics", "sinks[0].topic"]);
        let e = errors(json!({"sinks": [{"type": "kafka", "topic": "t"}]}));
        assert_eq!(e[0].path, "sinks[0]");
        assert!(e[0].message.contains("needs a kafka source"));
        let e = errors(json!({"key_by": 3}));
        assert_eq!(e[0].path, "key_by");
        let e = errors(json!({"watermark": {"max_future": "soon"}}));
        assert_eq!(e[0].path, "watermark.max_future");
        let off = parse(json!({"watermark": {"max_future": "off"}})).unwrap();
        assert_eq!(off.watermark.max_future, None);
        let text = serde_json::to_value(&off).unwrap();
        assert_eq!(text["watermark"]["max_future"], "off");
        assert_eq!(parse(text).unwrap(), off);
        let null = parse(json!({"watermark": {"max_future": null}})).unwrap();
        assert_eq!(null.watermark.max_future, None);
        let hour = parse(json!({"watermark": {"max_future": "1h"}})).unwrap();
        assert_eq!(hour.watermark.max_future, Some(DurationMs(3_600_000)));
        let e = errors(json!({"time": {"format": "epoch_ns"}}));
        assert_eq!(e[0].path, "time.format");
        let e = errors(json!({"patterns": "all"}));
        assert_eq!(e[0].path, "patterns");
        let e = errors(json!({"sinks": [{"type": "recent"}, {"type": "recent"}]}));
        assert_eq!(e[0].path, "sinks[1]");
        let file = parse(json!({"source": {"type": "file", "path": "in.jsonl"},
                                "sinks": [{"type": "file", "path": "-"}]}))
        .unwrap();
        let e = file.validate_for(Host::Service).unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["source", "sinks[0]"]);
        assert!(file.validate_for(Host::Command).is_ok());
    }

    #[test]
    fn window_stages_parse_and_name_their_errors() {
        let spec = parse(json!({
            "key_by": "sensor",
            "patterns": ["hot", "rising"],
            "window": {"type": "tumbling", "size": "10s", "allowed_lateness": "2s",
                       "aggregates": {"avg_temp": {"avg": "temp"}, "n": {"count": "*"}},
                       "patterns": ["hot"]}
        }))
        .unwrap();
        let w = spec.window.as_ref().unwrap();
        assert_eq!(w.kind, WindowKind::Tumbling);
        assert_eq!(w.size, Some(WindowSize::Duration(DurationMs(10_000))));
        assert_eq!(w.aggregates["avg_temp"], AggregateSpec::Avg("temp".into()));
        assert_eq!(parse(serde_json::to_value(&spec).unwrap()).unwrap(), spec);
        let count = parse(json!({"window": {"type": "count", "size": 100, "slide": 10}})).unwrap();
        assert_eq!(count.window.unwrap().slide, Some(WindowSize::Count(10)));

        let paths = |v: serde_json::Value| -> Vec<String> {
            errors(v).into_iter().map(|e| e.path).collect()
        };
        assert_eq!(
            paths(json!({"window": {"type": "tumbling"}})),
            ["window.size"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "sliding", "size": "10s", "gap": "1s"}})),
            ["window.slide", "window.gap"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "session", "gap": 0, "size": "1s"}})),
            ["window.gap", "window.size"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "count", "size": "10s", "allowed_lateness": "1s"}})),
            ["window.size", "window.allowed_lateness"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "tumbling", "size": "10s", "offset": "10s"}})),
            ["window.offset"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "sliding", "size": "1d", "slide": "1s"}})),
            ["window.slide"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "session", "gap": "36600d"}})),
            ["window.gap"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "hopping"}})),
            ["window.type"]
        );
        assert_eq!(
            paths(json!({"window": {"type": "tumbling", "size": "ten"}})),
            ["window.size"]
        );
        let e = errors(json!({"window": {"type": "tumbling", "size": "1s",
            "aggregates": {"avg_temp": {"avg": ""}, "key": {"max": "v"},
                           "window_end": {"min": "v"}, "x": {"median": "v"}}}}));
        assert_eq!(e[0].path, "window.aggregates.x");
        assert!(e[0].message.contains("median"), "{e:?}");
        let e = errors(json!({"window": {"type": "tumbling", "size": "1s",
            "aggregates": {"avg_temp": {"avg": ""}, "key": {"max": "v"}, "window_end": {"min": "v"}}}}));
        let got: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            got,
            [
                "window.aggregates.avg_temp.avg",
                "window.aggregates.key",
                "window.aggregates.window_end"
            ]
        );
        assert_eq!(
            paths(
                json!({"patterns": ["a"], "window": {"type": "session", "gap": "1s", "patterns": ["b"]}})
            ),
            ["window.patterns[0]"]
        );
        let kafka = json!({
            "source": {"type": "kafka", "bootstrap": "b", "topics": ["in"], "group": "g"},
            "window": {"type": "tumbling", "size": "1s"}
        });
        parse(kafka.clone()).expect("a window stage on a Kafka source");
        let mut workers = kafka.clone();
        workers["workers"] = json!(2);
        assert_eq!(paths(workers), ["workers"]);
        assert_eq!(paths(json!({"workers": 0})), ["workers"]);
        assert_eq!(paths(json!({"workers": 65})), ["workers"]);
        assert_eq!(
            paths(json!({"workers": 2, "time": {"mode": "processing"}})),
            ["workers"]
        );
        assert_eq!(parse(json!({"workers": 8})).unwrap().workers, 8);
        let mut rocksdb = kafka;
        rocksdb["state"] = json!({"backend": "rocksdb"});
        assert_eq!(paths(rocksdb), ["state.backend"]);
    }

    #[test]
    fn window_flags_make_the_same_stage() {
        let flags = WindowStageSpec::from_flags(
            "sliding:10s:5s",
            &["avg_temp=avg:temp".into(), "n=count:*".into()],
            DurationMs(1000),
            &["hot".into()],
        )
        .unwrap();
        let json: WindowStageSpec = serde_json::from_value(json!({
            "type": "sliding", "size": "10s", "slide": "5s", "allowed_lateness": "1s",
            "aggregates": {"avg_temp": {"avg": "temp"}, "n": {"count": "*"}},
            "patterns": ["hot"]
        }))
        .unwrap();
        assert_eq!(flags, json);
        let count = WindowStageSpec::from_flags("count:5", &[], DurationMs(0), &[]).unwrap();
        assert_eq!(count.size, Some(WindowSize::Count(5)));
        assert_eq!(count.patterns, PatternSelection::All);
        for (window, aggregates, needle) in [
            ("hopping:1s", vec![], "unknown window"),
            ("sliding:1s", vec![], "sliding:SIZE:SLIDE"),
            ("session:soon", vec![], "invalid duration"),
            (
                "tumbling:1s",
                vec!["avg".to_string()],
                "NAME=FUNCTION:FIELD",
            ),
            (
                "tumbling:1s",
                vec!["m=median:v".to_string()],
                "unknown function 'median'",
            ),
            (
                "tumbling:1s",
                vec!["a=sum:v".to_string(), "a=max:v".to_string()],
                "named twice",
            ),
        ] {
            let e =
                WindowStageSpec::from_flags(window, &aggregates, DurationMs(0), &[]).unwrap_err();
            assert!(e.contains(needle), "{window} {aggregates:?}: {e}");
        }
    }
}
