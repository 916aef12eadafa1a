//! The CEP service: `cep serve`, an axum service under /api/v1 with an embedded RocksDB store.
//!
//! A tour: [`config`] reads flags, `CEP_*` variables and a TOML file into a [`ServeConfig`];
//! [`state`] keeps the catalog of patterns and pipelines in memory and in the [`store`];
//! [`pipeline`] re-exports the pipeline layer (`cep-pipeline`: the spec and running pipelines); `routes` holds the endpoints,
//! `error` the one JSON error shape, and [`server`] starts and stops it all.
#![warn(missing_docs)]
#![recursion_limit = "256"]

mod automaton;
pub mod config;
mod console;
mod engine;
mod error;
mod metrics;
mod openapi;
pub mod pipeline;
mod routes;
pub mod server;
pub mod state;
mod validate;

pub use config::{ServeArgs, ServeConfig};
pub use server::{serve, start, RunningServer};

/// `cep serve`: reads the configuration, sets up logs, and serves until SIGTERM/SIGINT.
pub fn serve_main(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::resolve(&args)?;
    server::init_logging(config.log_format, &config.log)?;
    serve_blocking(config)
}

/// Serves `config` until SIGTERM or SIGINT (logging already set up).
pub fn serve_blocking(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}
