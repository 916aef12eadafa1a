//! The window-stage flags that `cep run` and `cep kafka` share: they make the `window` of the
//! pipeline spec (`docs/pipelines.md`, "Windows").

use cep_patterns::DurationMs;
use cep_pipeline::WindowStageSpec;

/// A window stage ahead of the patterns.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WindowArgs {
    /// Per key, windows whose results the patterns match: `tumbling:10s`, `sliding:10s:5s`,
    /// `session:30s`, `count:100` or `count:100:10`.
    #[arg(long)]
    pub window: Option<String>,
    /// An aggregate of each window result, `name=function:field` (repeatable):
    /// `avg_temp=avg:temp`, `n=count:*`; functions count, sum, avg, min, max, first, last,
    /// count_distinct.
    #[arg(long = "aggregate", requires = "window")]
    pub aggregates: Vec<String>,
    /// How long after its end a window still takes late events (and fires again), e.g. `5s`.
    #[arg(long, default_value = "0", requires = "window")]
    pub allowed_lateness: DurationMs,
    /// A pattern (by name) that matches the window results (repeatable); the other patterns
    /// match the events themselves. Default: every pattern matches window results.
    #[arg(long = "window-pattern", requires = "window")]
    pub window_patterns: Vec<String>,
}

impl WindowArgs {
    /// The window stage the flags describe, if any.
    pub fn spec(&self) -> anyhow::Result<Option<WindowStageSpec>> {
        let Some(window) = &self.window else {
            return Ok(None);
        };
        WindowStageSpec::from_flags(
            window,
            &self.aggregates,
            self.allowed_lateness,
            &self.window_patterns,
        )
        .map(Some)
        .map_err(anyhow::Error::msg)
    }
}
