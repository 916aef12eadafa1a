//! The `cep` binary.
use clap::{Parser, Subcommand};

mod bench;
mod bounds_args;
mod check;
mod kafka;
mod run;
mod window_args;

/// Complex event processing with Flink CEP semantics.
#[derive(Parser)]
#[command(name = "cep", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (patterns, pipelines, ingest, matches) with a RocksDB store.
    Serve(cep_api::ServeArgs),
    /// Evaluate patterns over a JSON-lines file of events, without a server.
    Run(run::RunArgs),
    /// Run a Kafka-in, Kafka-out pipeline (consumer group in; matches, timeouts, late events and
    /// dead letters out; at-least-once or exactly-once).
    Kafka(Box<kafka::KafkaArgs>),
    /// Validate pattern files (and with --explain, show their automata).
    Check(check::CheckArgs),
    /// Measure throughput on a generated workload (a deterministic per-key event stream and one of
    /// six patterns).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = cep_api::ServeConfig::resolve(&args)?;
            cep_api::server::init_logging(config.log_format, &config.log)?;
            cep_api::serve_blocking(config)
        }
        Command::Run(args) => std::process::exit(run::run(args)?),
        Command::Kafka(args) => std::process::exit(kafka::kafka(*args)?),
        Command::Check(args) => std::process::exit(check::check(args)?),
        Command::Bench(args) => std::process::exit(bench::bench(args)?),
    }
}
