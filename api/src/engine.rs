//! The engine the service's pipelines drive: the JSON evaluation engine of `cep-patterns`.

pub use cep_patterns::{compile, CompiledPattern, PatternError, PatternErrors, PatternSpec};
