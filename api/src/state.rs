//! The service's state: the catalog of patterns and pipelines, kept in memory and in the store.
//!
//! Lock order: the catalog, then a pipeline's engine, then its ring of outputs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::engine::{CompiledPattern, PatternErrors};
use crate::error::AppError;
use crate::pipeline::{
    Environment, Host, PatternSelection, Pipeline, PipelineRecord, PipelineSpec, SpecError,
    StartError,
};
use crate::validate::{pattern_errors, ValidPattern};
use cep_patterns::Replace;
use cep_pipeline::pattern_files;
use cep_pipeline::running::Retention;
use cep_pipeline::store::Store;

/// A registered pattern.
pub struct PatternEntry {
    /// The document as registered (with its name).
    pub document: Value,
    /// The compiled form shared with the engines (with its version).
    pub compiled: Arc<CompiledPattern>,
}

impl PatternEntry {
    fn new(document: Value, compiled: Arc<CompiledPattern>, version: u64) -> PatternEntry {
        let compiled = match Arc::try_unwrap(compiled) {
            Ok(c) => c.with_version(version),
            // Only the catalog holds a pattern being registered; should another hold it, the
            // spec compiles again (it compiled once).
            Err(shared) => match crate::engine::compile(shared.spec()) {
                Ok(c) => c.with_version(version),
                Err(_) => {
                    return PatternEntry {
                        document,
                        compiled: shared,
                    }
                }
            },
        };
        PatternEntry {
            document,
            compiled: Arc::new(compiled),
        }
    }

    /// The version: 1 when registered, one more at each change.
    pub fn version(&self) -> u64 {
        self.compiled.version()
    }

    /// The document as shown: with its version.
    pub fn shown(&self) -> Value {
        let mut doc = self.document.clone();
        if let Value::Object(map) = &mut doc {
            map.insert("version".into(), Value::from(self.version()));
        }
        doc
    }

    /// The stored form: `{"version", "document"}`.
    fn stored(&self) -> Value {
        json!({"version": self.version(), "document": self.document})
    }
}

/// Reads a stored pattern: `{"version", "document"}`, or a bare document (version 1) as
/// earlier versions stored it.
fn read_stored(bytes: &[u8]) -> (String, u64) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) {
        if let (Some(doc), Some(v)) = (
            map.get("document"),
            map.get("version").and_then(Value::as_u64),
        ) {
            if map.len() == 2 {
                return (doc.to_string(), v);
            }
        }
    }
    (text, 1)
}

#[derive(Default)]
struct Catalog {
    patterns: BTreeMap<String, PatternEntry>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
}

/// Shared by every request handler.
pub struct AppState {
    /// The effective configuration.
    pub config: ServeConfig,
    store: Arc<Store>,
    catalog: RwLock<Catalog>,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl AppState {
    /// Opens the store and starts every stored pipeline.
    pub fn open(config: ServeConfig) -> anyhow::Result<AppState> {
        let store = Arc::new(Store::open(&config.data_dir, config.durability)?);
        let mut catalog = Catalog::default();
        for (name, bytes) in store.patterns()? {
            let (text, version) = read_stored(&bytes);
            match crate::validate::check_stored(&text) {
                Ok(valid) => {
                    catalog.patterns.insert(
                        name,
                        PatternEntry::new(valid.document, valid.compiled, version),
                    );
                }
                // A pattern that an older version accepted but this one does not: keep serving
                // the others, and say so.
                Err(errors) => {
                    tracing::error!(pattern = %name, %errors, "stored pattern no longer compiles; skipped")
                }
            }
        }
        let (shutdown, _) = watch::channel(false);
        let state = AppState {
            config,
            store,
            catalog: RwLock::new(Catalog::default()),
            draining: AtomicBool::new(false),
            shutdown,
        };
        for (name, bytes) in state.store.pipelines()? {
            let record: PipelineRecord = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading stored pipeline {name}"))?;
            let patterns = select(&catalog.patterns, &record.spec.patterns);
            let pipeline = Pipeline::start(record, patterns, &state.environment())
                .map_err(|e| anyhow::anyhow!("starting pipeline {name}: {e}"))?;
            catalog.pipelines.insert(name, Arc::new(pipeline));
        }
        *state.write() = catalog;
        state.load_configured()?;
        if state.config.default_pipeline && !state.read().pipelines.contains_key("default") {
            state
                .create_pipeline(PipelineSpec::default_named("default"), false)
                .map_err(|e| anyhow::anyhow!("creating the default pipeline: {e}"))?;
            tracing::info!("created the default pipeline");
        }
        Ok(state)
    }

    /// What every pipeline is given.
    fn environment(&self) -> Environment {
        Environment {
            recent_outputs: self.config.recent_outputs,
            data_dir: self.config.data_dir.clone(),
            store: Some(self.store.clone()),
            checkpoint_every: std::time::Duration::from_millis(
                self.config.checkpoint_interval.0.max(1) as u64,
            ),
            retention: Retention {
                count: self.config.output_retention,
                age_ms: self
                    .config
                    .output_retention_age
                    .0
                    .map(|d| d.0.max(0) as u64),
            },
            clock: Arc::new(cep_pipeline::SystemClock),
        }
    }

    /// Registers the configuration's pattern files and creates (or replaces) its pipelines.
    fn load_configured(&self) -> anyhow::Result<()> {
        for file in pattern_files(&self.config.pattern_files)? {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("reading pattern file {}", file.display()))?;
            let valid = crate::validate::check_pattern(&self.config.limits, &bytes, None)
                .map_err(|e| anyhow::anyhow!("pattern file {}: {}", file.display(), e))?;
            self.put_pattern(valid, true, Replace::Drain)
                .map_err(|e| anyhow::anyhow!("pattern file {}: {}", file.display(), e))?;
        }
        for spec in &self.config.pipeline {
            let name = spec.name.clone();
            let unchanged = self
                .read()
                .pipelines
                .get(&name)
                .is_some_and(|p| p.spec() == *spec);
            if !unchanged {
                self.create_pipeline(spec.clone(), true)
                    .map_err(|e| anyhow::anyhow!("pipeline {name} of the configuration: {}", e))?;
            }
        }
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    // ---- Patterns ----

    /// Every pattern document (with its version), by name.
    pub fn patterns(&self) -> Vec<Value> {
        self.read()
            .patterns
            .values()
            .map(PatternEntry::shown)
            .collect()
    }

    /// One pattern document, with its version.
    pub fn pattern(&self, name: &str) -> Result<Value, AppError> {
        self.read()
            .patterns
            .get(name)
            .map(PatternEntry::shown)
            .ok_or_else(|| AppError::not_found("pattern", name))
    }

    /// One compiled pattern.
    pub fn compiled_pattern(&self, name: &str) -> Result<Arc<CompiledPattern>, AppError> {
        self.read()
            .patterns
            .get(name)
            .map(|p| p.compiled.clone())
            .ok_or_else(|| AppError::not_found("pattern", name))
    }

    /// Registers a new pattern (`replace`: false) or creates or replaces one (`replace`: true),
    /// a changed one under the next version, its predecessor draining or restarted in every
    /// pipeline as `mode` says. Returns whether it was created, and the pattern as shown.
    pub fn put_pattern(
        &self,
        valid: ValidPattern,
        replace: bool,
        mode: Replace,
    ) -> Result<(bool, Value), AppError> {
        let name = valid.compiled.name().to_string();
        let mut catalog = self.write();
        let existing = catalog.patterns.get(&name);
        let exists = existing.is_some();
        if exists && !replace {
            return Err(AppError::conflict(
                "already_exists",
                format!("pattern '{name}' already exists (use PUT to replace it)"),
            ));
        }
        if let Some(e) = existing {
            if e.document == valid.document {
                // The same definition again: nothing changes, not even the version.
                return Ok((false, e.shown()));
            }
        }
        if !exists && catalog.patterns.len() >= self.config.limits.max_patterns {
            return Err(AppError::conflict(
                "limit_reached",
                format!(
                    "there are already {} patterns, the limit",
                    catalog.patterns.len()
                ),
            ));
        }
        let version = existing.map_or(1, |e| e.version() + 1);
        let entry = PatternEntry::new(valid.document, valid.compiled, version);
        let text = serde_json::to_string(&entry.stored()).map_err(AppError::internal)?;
        self.store.put_pattern(&name, &text).map_err(store_failed)?;
        let shown = entry.shown();
        catalog.patterns.insert(name.clone(), entry);
        apply_patterns(&catalog, |selection| selection.includes(&name), mode)?;
        tracing::info!(pattern = %name, version, replaced = exists, ?mode, "pattern stored");
        Ok((!exists, shown))
    }

    /// Removes a pattern. Refused while a pipeline lists it by name.
    pub fn delete_pattern(&self, name: &str) -> Result<(), AppError> {
        let mut catalog = self.write();
        if !catalog.patterns.contains_key(name) {
            return Err(AppError::not_found("pattern", name));
        }
        let users: Vec<&str> = catalog
            .pipelines
            .values()
            .filter(|p| matches!(p.spec().patterns, PatternSelection::Names(ref n) if n.iter().any(|n| n == name)))
            .map(|p| p.name())
            .collect();
        if !users.is_empty() {
            return Err(AppError::conflict(
                "in_use",
                format!(
                    "pattern '{name}' is used by pipelines {users:?}; remove it from them first"
                ),
            )
            .with_details(json!({"pipelines": users})));
        }
        self.store.delete_pattern(name).map_err(store_failed)?;
        catalog.patterns.remove(name);
        apply_patterns(
            &catalog,
            |selection| selection.includes(name),
            Replace::Restart,
        )?;
        tracing::info!(pattern = %name, "pattern deleted");
        Ok(())
    }

    // ---- Pipelines ----

    /// Every pipeline.
    pub fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        self.read().pipelines.values().cloned().collect()
    }

    /// One pipeline.
    pub fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, AppError> {
        self.read()
            .pipelines
            .get(name)
            .cloned()
            .ok_or_else(|| AppError::not_found("pipeline", name))
    }

    /// Creates a pipeline (`replace`: false) or creates or replaces one (`replace`: true).
    /// Returns whether it was created.
    pub fn create_pipeline(&self, spec: PipelineSpec, replace: bool) -> Result<bool, AppError> {
        crate::validate::check_name(&spec.name).map_err(|m| {
            AppError::unprocessable("invalid_pipeline", m)
                .with_details(json!([{"path": "name", "message": "invalid name"}]))
        })?;
        spec.validate_for(Host::Service)
            .map_err(|errors| invalid_spec(&errors))?;
        let mut catalog = self.write();
        if let PatternSelection::Names(names) = &spec.patterns {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !catalog.patterns.contains_key(n.as_str()))
                .collect();
            if !unknown.is_empty() {
                return Err(AppError::unprocessable(
                    "unknown_pattern",
                    format!("no such patterns: {unknown:?}"),
                )
                .with_details(json!({"patterns": unknown})));
            }
        }
        let patterns = select(&catalog.patterns, &spec.patterns);
        let existing = catalog.pipelines.get(&spec.name).cloned();
        match existing {
            Some(_) if !replace => Err(AppError::conflict(
                "already_exists",
                format!(
                    "pipeline '{}' already exists (use PUT to replace it)",
                    spec.name
                ),
            )),
            Some(pipeline) => {
                let record = PipelineRecord {
                    spec: spec.clone(),
                    paused: pipeline.is_paused(),
                };
                self.persist_pipeline(&record)?;
                pipeline
                    .reconfigure(spec, patterns)
                    .map_err(|e| start_refused(&e))?;
                tracing::info!(pipeline = %record.spec.name, "pipeline replaced");
                Ok(false)
            }
            None => {
                if catalog.pipelines.len() >= self.config.limits.max_pipelines {
                    return Err(AppError::conflict(
                        "limit_reached",
                        format!(
                            "there are already {} pipelines, the limit",
                            catalog.pipelines.len()
                        ),
                    ));
                }
                let record = PipelineRecord {
                    spec,
                    paused: false,
                };
                let pipeline = Pipeline::start(record.clone(), patterns, &self.environment())
                    .map_err(|e| start_refused(&e))?;
                self.persist_pipeline(&record)?;
                catalog
                    .pipelines
                    .insert(record.spec.name.clone(), Arc::new(pipeline));
                tracing::info!(pipeline = %record.spec.name, "pipeline created");
                Ok(true)
            }
        }
    }

    /// Removes a pipeline; its live streams end.
    pub fn delete_pipeline(&self, name: &str) -> Result<(), AppError> {
        let mut catalog = self.write();
        if !catalog.pipelines.contains_key(name) {
            return Err(AppError::not_found("pipeline", name));
        }
        self.store.delete_pipeline(name).map_err(store_failed)?;
        if let Some(pipeline) = catalog.pipelines.remove(name) {
            // A Kafka pipeline commits its last epoch and leaves its group.
            pipeline.stop();
        }
        tracing::info!(pipeline = %name, "pipeline deleted");
        Ok(())
    }

    /// Pauses or resumes a pipeline's intake.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<Arc<Pipeline>, AppError> {
        let catalog = self.write();
        let pipeline = self.pipeline_locked(&catalog, name)?;
        let mut record = pipeline.record();
        record.paused = paused;
        self.persist_pipeline(&record)?;
        pipeline.set_paused(paused);
        tracing::info!(pipeline = %name, paused, "pipeline intake changed");
        Ok(pipeline)
    }

    fn pipeline_locked(&self, catalog: &Catalog, name: &str) -> Result<Arc<Pipeline>, AppError> {
        catalog
            .pipelines
            .get(name)
            .cloned()
            .ok_or_else(|| AppError::not_found("pipeline", name))
    }

    fn persist_pipeline(&self, record: &PipelineRecord) -> Result<(), AppError> {
        let bytes = serde_json::to_vec(record).map_err(AppError::internal)?;
        self.store
            .put_pipeline(&record.spec.name, &bytes)
            .map_err(store_failed)?;
        Ok(())
    }

    /// Number of registered patterns.
    pub fn pattern_count(&self) -> usize {
        self.read().patterns.len()
    }

    // ---- Lifecycle ----

    /// Whether the service is shutting down (intake stopped).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops intake and ends live streams.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
    }

    /// Resolves when shutdown begins.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            // An error means the sender is gone: shutting down as well.
            let _ = rx.wait_for(|down| *down).await;
        }
    }

    /// Stops every pipeline (Kafka pipelines commit their last epoch), checkpoints the HTTP
    /// ones (the next start replays nothing), and flushes the store.
    pub fn persist(&self) -> anyhow::Result<()> {
        for pipeline in self.pipelines() {
            pipeline.stop();
            if let Err(e) = pipeline.checkpoint() {
                tracing::error!(pipeline = %pipeline.name(), error = %e, "final checkpoint failed");
            }
        }
        self.store.flush()?;
        self.store.close();
        Ok(())
    }

    /// Why the store refuses writes, after a failed one (the service is then not ready).
    pub fn store_failure(&self) -> Option<String> {
        self.store.failure()
    }
}

/// 422 with each problem of a spec and the path of its field.
pub fn invalid_spec(errors: &[SpecError]) -> AppError {
    let message = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    AppError::unprocessable("invalid_pipeline", format!("invalid pipeline: {message}"))
        .with_details(serde_json::to_value(errors).unwrap_or_default())
}

/// 503: the store refused a write; nothing of the request took effect.
fn store_failed(e: anyhow::Error) -> AppError {
    AppError::unavailable(format!("the store failed: {e:#}"))
}

fn start_refused(e: &StartError) -> AppError {
    match e {
        StartError::Patterns(e) => engine_refused(e),
        StartError::Store(e) => AppError::unavailable(format!("the store failed: {e:#}")),
    }
}

fn engine_refused(e: &PatternErrors) -> AppError {
    let mut details = pattern_errors(e);
    // The engine names its settings; the spec nests the time field under `time`.
    if let Some(errors) = details["errors"].as_array_mut() {
        for error in errors {
            if error["path"] == "time_field" {
                error["path"] = "time.field".into();
            }
        }
    }
    AppError::unprocessable("invalid_pipeline", "the engine refused this pipeline")
        .with_details(details)
}

fn select(
    patterns: &BTreeMap<String, PatternEntry>,
    selection: &PatternSelection,
) -> Vec<Arc<CompiledPattern>> {
    patterns
        .iter()
        .filter(|(name, _)| selection.includes(name))
        .map(|(_, p)| p.compiled.clone())
        .collect()
}

/// Hands the current pattern set to every pipeline whose selection is affected.
fn apply_patterns(
    catalog: &Catalog,
    affected: impl Fn(&PatternSelection) -> bool,
    mode: Replace,
) -> Result<(), AppError> {
    for pipeline in catalog.pipelines.values() {
        let selection = pipeline.spec().patterns;
        if affected(&selection) {
            pipeline
                .set_patterns(select(&catalog.patterns, &selection), mode)
                .map_err(|e| match e {
                    StartError::Store(e) => store_failed(e),
                    e => AppError::internal(anyhow::anyhow!(
                        "pipeline {} refused the new patterns: {e}",
                        pipeline.name()
                    )),
                })?;
        }
    }
    Ok(())
}
