//! The state-bound flags that `cep run` and `cep kafka` share: they set the `state` bounds of the
//! pipeline spec (`docs/pipelines.md`, "`state`").

use cep_patterns::DurationMs;
use cep_pipeline::StateSpec;

/// Bounds on the state the pipeline keeps (none by default, as in Flink).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BoundsArgs {
    /// Partial matches per key and pattern; beyond it the oldest are dropped (counted).
    #[arg(long)]
    pub max_partial_matches: Option<usize>,
    /// Events a key keeps per pattern in the shared buffer; beyond it its oldest partial
    /// matches are dropped (counted).
    #[arg(long)]
    pub max_buffered_events: Option<usize>,
    /// Keys with state; a new key beyond it drops the least recently active tenth (counted).
    #[arg(long)]
    pub max_keys: Option<usize>,
    /// A key whose latest event is this far behind the watermark is dropped with its partial
    /// matches, without timeouts (counted), e.g. `1h`.
    #[arg(long)]
    pub key_ttl: Option<DurationMs>,
}

impl BoundsArgs {
    /// Sets the bounds the flags give in `state`.
    pub fn apply(&self, state: &mut StateSpec) {
        state.max_partial_matches = self.max_partial_matches;
        state.max_buffered_events = self.max_buffered_events;
        state.max_keys = self.max_keys;
        state.key_ttl = self.key_ttl;
    }
}
