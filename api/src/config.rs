//! The service's configuration: flags, `CEP_*` environment variables and an optional TOML file.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML file, default.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use cep_patterns::DurationMs;
use cep_pipeline::store::Durability;
use cep_pipeline::{Host, PipelineSpec, SourceSpec};

/// `cep serve` flags. Each also reads a `CEP_*` environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// A TOML configuration file; flags and environment variables override its values.
    #[arg(long, env = "CEP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CEP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where patterns, pipelines and recent outputs are stored (RocksDB) [default: ./data].
    #[arg(long, env = "CEP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A bearer token required on every endpoint but /healthz and /readyz.
    #[arg(long, env = "CEP_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// The largest request body accepted, in bytes [default: 10485760].
    #[arg(long, env = "CEP_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Create the pipeline "default" (key_by "key", time field "ts", epoch_ms, all patterns) at
    /// start when it does not exist [default: true].
    #[arg(long, env = "CEP_DEFAULT_PIPELINE", action = clap::ArgAction::Set)]
    pub default_pipeline: Option<bool>,
    /// How many recent outputs each pipeline keeps for GET .../matches [default: 10000].
    #[arg(long, env = "CEP_RECENT_OUTPUTS")]
    pub recent_outputs: Option<usize>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CEP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "cep_api=debug" [default: info].
    #[arg(long, env = "CEP_LOG")]
    pub log: Option<String>,
    /// The most stages (counting group members) a pattern may have [default: 64].
    #[arg(long, env = "CEP_MAX_PATTERN_STAGES")]
    pub max_pattern_stages: Option<usize>,
    /// The longest condition (`where`) a stage may have, in bytes [default: 4096].
    #[arg(long, env = "CEP_MAX_CONDITION_LENGTH")]
    pub max_condition_length: Option<usize>,
    /// The longest window (`within`) a pattern may have, e.g. "7d" [default: 7d].
    #[arg(long, env = "CEP_MAX_WINDOW", value_parser = parse_duration)]
    pub max_window: Option<DurationMs>,
    /// The largest pattern document, in bytes [default: 65536].
    #[arg(long, env = "CEP_MAX_PATTERN_BYTES")]
    pub max_pattern_bytes: Option<usize>,
    /// The most pipelines [default: 64].
    #[arg(long, env = "CEP_MAX_PIPELINES")]
    pub max_pipelines: Option<usize>,
    /// The most patterns [default: 1024].
    #[arg(long, env = "CEP_MAX_PATTERNS")]
    pub max_patterns: Option<usize>,
    /// When accepted events are durable: write (to the operating system before the 202:
    /// survives a crash of the process), fsync (synced before the 202, one sync for the
    /// requests written together: survives a power loss) or off (memory only) [default: write].
    #[arg(long, env = "CEP_DURABILITY")]
    pub durability: Option<Durability>,
    /// How often an HTTP pipeline checkpoints its state, e.g. "10s" [default: 10s].
    #[arg(long, env = "CEP_CHECKPOINT_INTERVAL", value_parser = parse_duration)]
    pub checkpoint_interval: Option<DurationMs>,
    /// How many outputs each pipeline's output log keeps [default: 1000000].
    #[arg(long, env = "CEP_OUTPUT_RETENTION")]
    pub output_retention: Option<u64>,
    /// How long the output log keeps an output, e.g. "7d"; "off" for no limit [default: 7d].
    #[arg(long, env = "CEP_OUTPUT_RETENTION_AGE", value_parser = parse_optional_duration)]
    pub output_retention_age: Option<OptionalDuration>,
}

/// A duration, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OptionalDuration(pub Option<DurationMs>);

impl TryFrom<String> for OptionalDuration {
    type Error = String;
    fn try_from(s: String) -> Result<OptionalDuration, String> {
        parse_optional_duration(&s)
    }
}

impl From<OptionalDuration> for String {
    fn from(d: OptionalDuration) -> String {
        match d.0 {
            Some(d) => format!("{}ms", d.0),
            None => "off".into(),
        }
    }
}

fn parse_optional_duration(text: &str) -> Result<OptionalDuration, String> {
    if text == "off" {
        return Ok(OptionalDuration(None));
    }
    DurationMs::parse(text).map(|d| OptionalDuration(Some(d)))
}

fn parse_duration(text: &str) -> Result<DurationMs, String> {
    DurationMs::parse(text)
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits on what a client may register.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The most stages (counting group members) in one pattern.
    pub max_pattern_stages: usize,
    /// The longest `where` condition, in bytes.
    pub max_condition_length: usize,
    /// The longest `within` window.
    pub max_window: DurationMs,
    /// The largest pattern document, in bytes.
    pub max_pattern_bytes: usize,
    /// The most pipelines.
    pub max_pipelines: usize,
    /// The most patterns.
    pub max_patterns: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pattern_stages: 64,
            max_condition_length: 4096,
            max_window: DurationMs(7 * 86_400_000),
            max_pattern_bytes: 64 * 1024,
            max_pipelines: 64,
            max_patterns: 1024,
        }
    }
}

/// The effective configuration of `cep serve`. Also the shape of the TOML file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The RocksDB directory.
    pub data_dir: PathBuf,
    /// The bearer token, if any.
    pub auth_token: Option<String>,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// Whether the pipeline "default" is created at start when missing.
    pub default_pipeline: bool,
    /// Recent outputs kept per pipeline.
    pub recent_outputs: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Limits on patterns and pipelines.
    pub limits: Limits,
    /// Pattern files, or directories of `*.json` pattern files, registered (or replaced) at start.
    pub pattern_files: Vec<PathBuf>,
    /// Pipelines created (or replaced) at start: `[[pipeline]]` tables, each a pipeline spec as
    /// `POST /api/v1/pipelines` takes it (docs/pipelines.md).
    pub pipeline: Vec<PipelineSpec>,
    /// When accepted events are durable (docs/service.md, "Durability").
    pub durability: Durability,
    /// How often an HTTP pipeline checkpoints.
    pub checkpoint_interval: DurationMs,
    /// How many outputs each pipeline's output log keeps.
    pub output_retention: u64,
    /// How long the output log keeps an output (`off`: no limit).
    pub output_retention_age: OptionalDuration,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            auth_token: None,
            body_limit: 10 * 1024 * 1024,
            default_pipeline: true,
            recent_outputs: 10_000,
            log_format: LogFormat::Text,
            log: "info".to_string(),
            limits: Limits::default(),
            pattern_files: Vec::new(),
            pipeline: Vec::new(),
            durability: Durability::Write,
            checkpoint_interval: DurationMs(10_000),
            output_retention: 1_000_000,
            output_retention_age: OptionalDuration(Some(DurationMs(7 * 86_400_000))),
        }
    }
}

impl ServeConfig {
    /// The configuration from the TOML file named by `args` (if any), overridden by the flags
    /// and environment variables in `args`.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the configuration file {}", path.display())
                })?;
                ServeConfig::from_toml(&text)
                    .with_context(|| format!("in the configuration file {}", path.display()))?
            }
            None => ServeConfig::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    /// Parses the TOML form; missing keys take their defaults.
    pub fn from_toml(text: &str) -> anyhow::Result<ServeConfig> {
        Ok(toml::from_str(text)?)
    }

    fn apply(&mut self, args: &ServeArgs) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        set(&mut self.data_dir, &args.data_dir);
        if args.auth_token.is_some() {
            self.auth_token = args.auth_token.clone();
        }
        set(&mut self.body_limit, &args.body_limit);
        set(&mut self.default_pipeline, &args.default_pipeline);
        set(&mut self.recent_outputs, &args.recent_outputs);
        set(&mut self.log_format, &args.log_format);
        set(&mut self.log, &args.log);
        set(
            &mut self.limits.max_pattern_stages,
            &args.max_pattern_stages,
        );
        set(
            &mut self.limits.max_condition_length,
            &args.max_condition_length,
        );
        set(&mut self.limits.max_window, &args.max_window);
        set(&mut self.limits.max_pattern_bytes, &args.max_pattern_bytes);
        set(&mut self.limits.max_pipelines, &args.max_pipelines);
        set(&mut self.limits.max_patterns, &args.max_patterns);
        set(&mut self.durability, &args.durability);
        set(&mut self.checkpoint_interval, &args.checkpoint_interval);
        set(&mut self.output_retention, &args.output_retention);
        set(&mut self.output_retention_age, &args.output_retention_age);
        // An empty token (e.g. `CEP_AUTH_TOKEN=`) means no authentication.
        if self.auth_token.as_deref() == Some("") {
            self.auth_token = None;
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.body_limit > 0, "body_limit must be positive");
        anyhow::ensure!(self.recent_outputs > 0, "recent_outputs must be positive");
        anyhow::ensure!(
            self.output_retention > 0,
            "output_retention must be positive"
        );
        anyhow::ensure!(
            self.checkpoint_interval.0 > 0,
            "checkpoint_interval must be positive"
        );
        for (i, spec) in self.pipeline.iter().enumerate() {
            anyhow::ensure!(
                !spec.name.is_empty(),
                "pipeline[{i}]: a pipeline of the configuration needs a name"
            );
            if let Err(errors) = spec.validate_for(Host::Service) {
                let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                anyhow::bail!("pipeline[{i}] ({}): {}", spec.name, lines.join("; "));
            }
        }
        Ok(())
    }

    /// The configuration as logged: the token is redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if self.auth_token.is_some() {
            value["auth_token"] = serde_json::Value::from("<redacted>");
        }
        // Kafka client options may carry credentials (`sasl.password`).
        for (i, spec) in self.pipeline.iter().enumerate() {
            if let SourceSpec::Kafka(k) = &spec.source {
                for key in k.options.keys() {
                    if key.contains("password") || key.contains("secret") {
                        value["pipeline"][i]["source"]["options"][key.as_str()] =
                            serde_json::Value::from("<redacted>");
                    }
                }
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_toml_which_overrides_defaults() {
        let mut config = ServeConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\nbody_limit = 100\n[limits]\nmax_window = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(config.body_limit, 100);
        assert_eq!(config.limits.max_window, DurationMs(3_600_000));
        assert_eq!(config.recent_outputs, 10_000);
        config.apply(&ServeArgs {
            body_limit: Some(5),
            auth_token: Some("s3cret".into()),
            ..ServeArgs::default()
        });
        assert_eq!(config.body_limit, 5);
        assert_eq!(config.listen.port(), 9000);
        let logged = config.redacted().to_string();
        assert!(!logged.contains("s3cret"));
        assert!(logged.contains("redacted"));
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        assert!(ServeConfig::from_toml("lisen = \"x\"").is_err());
    }

    #[test]
    fn pipeline_tables_are_specs() {
        let config = ServeConfig::from_toml(
            r#"
[[pipeline]]
name = "k"
key_by = "user"
time = { field = "ts" }
watermark = { out_of_orderness = "1.5s" }
source = { type = "kafka", bootstrap = "127.0.0.1:9092", topics = ["in"], group = "g", options = { "sasl.password" = "pw" } }
sinks = [{ type = "kafka", topic = "alerts" }, { type = "recent" }]
"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.pipeline[0].watermark.out_of_orderness,
            DurationMs(1500)
        );
        assert!(config.pipeline[0].has_recent_sink());
        let logged = config.redacted().to_string();
        assert!(!logged.contains("\"pw\""), "{logged}");
        let bad = ServeConfig::from_toml(
            "[[pipeline]]\nname = \"h\"\nsinks = [{ type = \"kafka\", topic = \"t\" }]\n",
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("sinks[0]"), "{e}");
    }

    #[test]
    fn pipeline_tables_take_a_window_stage() {
        let config = ServeConfig::from_toml(
            r#"
[[pipeline]]
name = "sensors"
key_by = "sensor"
patterns = ["sensor-rising", "sensor-hot"]

[pipeline.window]
type = "tumbling"
size = "10s"
patterns = ["sensor-hot"]
aggregates = { avg_temp = { avg = "temp" }, readings = { count = "*" } }
"#,
        )
        .unwrap();
        config.validate().unwrap();
        let window = config.pipeline[0].window.as_ref().unwrap();
        assert_eq!(window.aggregates.len(), 2);
        let bad =
            ServeConfig::from_toml("[[pipeline]]\nname = \"w\"\nwindow = { type = \"session\" }\n")
                .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("window.gap"), "{e}");
    }
}
