//! The engine the service drives: the JSON evaluation engine of `cep-patterns`, one per pipeline.

pub use cep_patterns::{
    compile, CompiledPattern, EngineConfig, JsonEngine, Output, PatternError, PatternErrors,
    PatternSpec, TimeFormat,
};
