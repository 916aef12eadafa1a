//! # cep-patterns: patterns as JSON
//!
//! - [`PatternSpec`] is the JSON pattern format (see `docs/patterns.md`); parsing errors say
//!   where they are (`stages[1].times`).
//! - [`condition`] is the condition language of `where` and `until`.
//! - [`compile`] validates a spec and compiles it onto the `cep` engine.
//! - [`JsonEngine`] evaluates compiled patterns over JSON events, keyed and timed by fields, in
//!   event time: what `cep run` and the service's pipelines run.
//!
//! This crate does no IO.
#![warn(missing_docs)]

mod compile;
pub mod condition;
mod engine;
mod scan;
mod spec;
mod write;

pub use cep::StateBounds;
pub use compile::{compile, CompiledPattern, JsonEvent};
pub use engine::{
    json_type, EngineConfig, EngineStats, FieldPath, JsonEngine, KeyView, MatchEvents, Output,
    OutputKind, ParsedEvent, PartialMatchInfo, PatternStats, RecordError, Replace, TimeFormat,
    WaitingEvent,
};
pub use spec::{
    AfterMatchSpec, ContiguitySpec, DurationMs, PatternError, PatternErrors, PatternSpec,
    StageSpec, TimesSpec, WithinTypeSpec,
};
pub use write::write_str;
