//! The window operator (Flink's `WindowOperator`/`EvictingWindowOperator`) and the ways it keeps a
//! window's contents.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::assigner::WindowAssigner;
use super::trigger::{TimerOp, Trigger, TriggerContext, TriggerResult};
use super::Window;
use crate::error::Result;
use crate::operator::{Key, Operator, OperatorSnapshot, Output, OutputTag};
use crate::state::{
    encode_into, AggregateFunction, KeyedStateStore, ListState, StateBackend, ValueState,
};
use crate::time::{Clock, Timestamp, MAX_WATERMARK};
use crate::timers::{TimeDomain, Timer, TimerService};

const CONTENTS: &str = "window-contents";

/// How a window's contents are kept in state and turned into output when it fires. The state
/// namespace is set to the window before every call.
pub trait WindowContents<K, T, W>: Send + Sync {
    /// What a firing emits.
    type Out;
    /// Adds an element.
    fn add(&self, store: &mut KeyedStateStore, value: &T) -> Result<()>;
    /// Whether the window has any contents (a trigger is only consulted for windows that do).
    fn has_contents(&self, store: &mut KeyedStateStore) -> Result<bool>;
    /// Emits the window's result into `out`.
    fn emit(
        &self,
        key: &K,
        window: &W,
        store: &mut KeyedStateStore,
        out: &mut Vec<Self::Out>,
    ) -> Result<()>;
    /// Drops the contents.
    fn clear(&self, store: &mut KeyedStateStore) -> Result<()>;
    /// Moves the contents of the window whose encoded namespace is `from` into the current window
    /// (session merges).
    fn merge_from(&self, store: &mut KeyedStateStore, from: &[u8]) -> Result<()>;
}

/// A full-window function: gets every element of the window when it fires (Flink's
/// `ProcessWindowFunction`). Implemented for closures `Fn(&K, &W, Vec<T>, &mut Vec<O>)`.
pub trait ProcessWindowFunction<K, T, W, O>: Send + Sync {
    /// Emits the results for `window` of `key` into `out`.
    fn process(&self, key: &K, window: &W, elements: Vec<T>, out: &mut Vec<O>);
}

impl<K, T, W, O, F> ProcessWindowFunction<K, T, W, O> for F
where
    F: Fn(&K, &W, Vec<T>, &mut Vec<O>) + Send + Sync,
{
    fn process(&self, key: &K, window: &W, elements: Vec<T>, out: &mut Vec<O>) {
        self(key, window, elements, out)
    }
}

/// Keeps every element (list state) and hands them to a [`ProcessWindowFunction`]; with an evictor,
/// only the last `keep_last` elements are kept when the window fires (Flink's `CountEvictor`).
pub struct ListContents<T, O, F> {
    state: ListState<T>,
    keep_last: Option<usize>,
    function: F,
    _o: PhantomData<fn() -> O>,
}

impl<T, O, F> ListContents<T, O, F> {
    /// Contents passed whole to `function`.
    pub fn new(function: F, keep_last: Option<usize>) -> Self {
        ListContents {
            state: ListState::new(CONTENTS),
            keep_last,
            function,
            _o: PhantomData,
        }
    }
}

impl<K, T, W, O, F> WindowContents<K, T, W> for ListContents<T, O, F>
where
    T: Serialize + DeserializeOwned,
    F: ProcessWindowFunction<K, T, W, O>,
{
    type Out = O;

    fn add(&self, store: &mut KeyedStateStore, value: &T) -> Result<()> {
        self.state.add(store, value)
    }

    fn has_contents(&self, store: &mut KeyedStateStore) -> Result<bool> {
        store.contains(self.state.name())
    }

    fn emit(
        &self,
        key: &K,
        window: &W,
        store: &mut KeyedStateStore,
        out: &mut Vec<O>,
    ) -> Result<()> {
        let mut elements = self.state.get(store)?;
        if let Some(n) = self.keep_last {
            if elements.len() > n {
                // Evict before the function, and keep only what is left, as Flink's evictor does.
                elements.drain(..elements.len() - n);
                self.state.update(store, &elements)?;
            }
        }
        if !elements.is_empty() {
            self.function.process(key, window, elements, out);
        }
        Ok(())
    }

    fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        self.state.clear(store)
    }

    fn merge_from(&self, store: &mut KeyedStateStore, from: &[u8]) -> Result<()> {
        store.move_appending(self.state.name(), from)
    }
}

/// Keeps one value per window, folded with a reduce function as elements arrive; a firing emits
/// `finish(key, window, value)`.
pub struct ReduceContents<T, O, F, P> {
    state: ValueState<T>,
    reduce: F,
    finish: P,
    _o: PhantomData<fn() -> O>,
}

impl<T, O, F, P> ReduceContents<T, O, F, P> {
    /// Contents reduced with `reduce`, emitted through `finish`.
    pub fn new(reduce: F, finish: P) -> Self {
        ReduceContents {
            state: ValueState::new(CONTENTS),
            reduce,
            finish,
            _o: PhantomData,
        }
    }
}

impl<K, T, W, O, F, P> WindowContents<K, T, W> for ReduceContents<T, O, F, P>
where
    T: Serialize + DeserializeOwned + Clone,
    F: Fn(T, T) -> T + Send + Sync,
    P: Fn(&K, &W, T) -> O + Send + Sync,
{
    type Out = O;

    fn add(&self, store: &mut KeyedStateStore, value: &T) -> Result<()> {
        let next = match self.state.get(store)? {
            Some(acc) => (self.reduce)(acc, value.clone()),
            None => value.clone(),
        };
        self.state.update(store, &next)
    }

    fn has_contents(&self, store: &mut KeyedStateStore) -> Result<bool> {
        store.contains(self.state.name())
    }

    fn emit(
        &self,
        key: &K,
        window: &W,
        store: &mut KeyedStateStore,
        out: &mut Vec<O>,
    ) -> Result<()> {
        if let Some(v) = self.state.get(store)? {
            out.push((self.finish)(key, window, v));
        }
        Ok(())
    }

    fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        self.state.clear(store)
    }

    fn merge_from(&self, store: &mut KeyedStateStore, from: &[u8]) -> Result<()> {
        if let Some(other) = store.take_value_in::<T>(self.state.name(), from)? {
            let next = match self.state.get(store)? {
                Some(mine) => (self.reduce)(mine, other),
                None => other,
            };
            self.state.update(store, &next)?;
        }
        Ok(())
    }
}

/// Keeps one accumulator per window ([`AggregateFunction`]); a firing emits
/// `finish(key, window, result)`.
pub struct AggregateContents<A: AggregateFunction, O, P> {
    state: ValueState<A::Acc>,
    function: A,
    finish: P,
    _o: PhantomData<fn() -> O>,
}

impl<A: AggregateFunction, O, P> AggregateContents<A, O, P> {
    /// Contents aggregated with `function`, emitted through `finish`.
    pub fn new(function: A, finish: P) -> Self {
        AggregateContents {
            state: ValueState::new(CONTENTS),
            function,
            finish,
            _o: PhantomData,
        }
    }
}

impl<K, T, W, O, A, P> WindowContents<K, T, W> for AggregateContents<A, O, P>
where
    T: Clone,
    A: AggregateFunction<In = T>,
    P: Fn(&K, &W, A::Out) -> O + Send + Sync,
{
    type Out = O;

    fn add(&self, store: &mut KeyedStateStore, value: &T) -> Result<()> {
        let mut acc = match self.state.get(store)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.function.add(value.clone(), &mut acc);
        self.state.update(store, &acc)
    }

    fn has_contents(&self, store: &mut KeyedStateStore) -> Result<bool> {
        store.contains(self.state.name())
    }

    fn emit(
        &self,
        key: &K,
        window: &W,
        store: &mut KeyedStateStore,
        out: &mut Vec<O>,
    ) -> Result<()> {
        if let Some(acc) = self.state.get(store)? {
            out.push((self.finish)(key, window, self.function.get_result(&acc)));
        }
        Ok(())
    }

    fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        self.state.clear(store)
    }

    fn merge_from(&self, store: &mut KeyedStateStore, from: &[u8]) -> Result<()> {
        if let Some(other) = store.take_value_in::<A::Acc>(self.state.name(), from)? {
            let next = match self.state.get(store)? {
                Some(mine) => self.function.merge(mine, other),
                None => other,
            };
            self.state.update(store, &next)?;
        }
        Ok(())
    }
}

/// Everything that configures a window operator except its contents; cheap to clone (shared
/// between parallel workers).
pub struct WindowSpec<T, A: WindowAssigner> {
    /// The assigner.
    pub assigner: Arc<A>,
    /// The trigger (the assigner's default unless replaced).
    pub trigger: Arc<dyn Trigger<T, A::W>>,
    /// How long after a window's end late elements still update (and re-fire) it.
    pub allowed_lateness: Timestamp,
    /// Where elements later than the allowed lateness go; dropped without one.
    pub late_tag: Option<OutputTag<T>>,
}

impl<T, A: WindowAssigner> Clone for WindowSpec<T, A> {
    fn clone(&self) -> Self {
        WindowSpec {
            assigner: self.assigner.clone(),
            trigger: self.trigger.clone(),
            allowed_lateness: self.allowed_lateness,
            late_tag: self.late_tag.clone(),
        }
    }
}

impl<T: 'static, A: WindowAssigner> WindowSpec<T, A> {
    /// A spec with the assigner's default trigger, no allowed lateness and no late-data output.
    pub fn new(assigner: A) -> Self {
        let trigger = assigner.default_trigger();
        WindowSpec {
            assigner: Arc::new(assigner),
            trigger,
            allowed_lateness: 0,
            late_tag: None,
        }
    }
}

/// One key's part of a [`WindowOperator`]: the raw state entries of its windows and its
/// timers (see [`WindowOperator::snapshot_key`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(bound = "W: Window")]
pub struct WindowKeyState<W> {
    /// State entries (backend keys and values).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Event-time timers: time and window.
    pub event_timers: Vec<(Timestamp, W)>,
    /// Processing-time timers: time and window.
    pub processing_timers: Vec<(Timestamp, W)>,
}

impl<W> WindowKeyState<W> {
    /// Whether the key holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.event_timers.is_empty() && self.processing_timers.is_empty()
    }
}

/// Runs windows over `(key, element)` input.
pub struct WindowOperator<K, T, A: WindowAssigner, C: WindowContents<K, T, A::W>> {
    spec: WindowSpec<T, A>,
    contents: Arc<C>,
    state: KeyedStateStore,
    timers: TimerService<K, A::W>,
    window_set: ValueState<Vec<A::W>>,
    windows: Vec<A::W>,
    ops: Vec<TimerOp>,
    emitted: Vec<O<C, K, T, A>>,
    ns: Vec<u8>,
    /// With change tracking on, the keys whose state or timers changed since the last
    /// [`WindowOperator::take_changed`].
    changed: Option<rustc_hash::FxHashSet<K>>,
}

type O<C, K, T, A> = <C as WindowContents<K, T, <A as WindowAssigner>::W>>::Out;

impl<K, T, A, C> WindowOperator<K, T, A, C>
where
    K: Key,
    T: Send + 'static,
    A: WindowAssigner,
    C: WindowContents<K, T, A::W>,
{
    /// A window operator keeping state in `backend` and reading processing time from `clock`.
    pub fn new(
        spec: WindowSpec<T, A>,
        contents: Arc<C>,
        backend: Box<dyn StateBackend>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        WindowOperator {
            spec,
            contents,
            state: KeyedStateStore::new(backend),
            timers: TimerService::new(clock),
            window_set: ValueState::new("merging-window-set"),
            windows: Vec::new(),
            ops: Vec::new(),
            emitted: Vec::new(),
            ns: Vec::new(),
            changed: None,
        }
    }

    /// Starts (or stops) recording which keys change, for changelogs that write only those.
    pub fn track_changes(&mut self, on: bool) {
        self.changed = on.then(Default::default);
    }

    /// The keys whose state or timers changed since the last call (elements taken, windows
    /// fired or cleaned up); empty without [`WindowOperator::track_changes`].
    pub fn take_changed(&mut self) -> Vec<K> {
        self.changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }

    fn mark_changed(&mut self, key: &K) {
        if let Some(changed) = &mut self.changed {
            if !changed.contains(key) {
                changed.insert(key.clone());
            }
        }
    }

    /// The keyed state (for snapshots and inspection).
    pub fn state(&mut self) -> &mut KeyedStateStore {
        &mut self.state
    }

    /// The timer service.
    pub fn timers(&self) -> &TimerService<K, A::W> {
        &self.timers
    }

    /// The names of every keyed state the operator keeps: the contents, the merging window set
    /// and the trigger's.
    fn state_names(&self) -> Vec<String> {
        let mut names = vec![CONTENTS.to_owned(), self.window_set.name().to_owned()];
        names.extend(self.spec.trigger.state_names());
        names
    }

    fn key_prefixes(&self, key: &K) -> Result<Vec<Vec<u8>>> {
        let mut encoded = Vec::new();
        encode_into(key, &mut encoded)?;
        Ok(self
            .state_names()
            .iter()
            .map(|name| {
                // `state | key` without the namespace: every window of the key.
                let mut prefix = Vec::new();
                crate::state::encode_state_key(&mut prefix, name, &encoded, &[]);
                prefix.truncate(prefix.len() - 4);
                prefix
            })
            .collect())
    }

    /// One key's part of the operator (its windows' state and its timers), for changelogs that
    /// keep state per key; `None` when the key holds nothing.
    pub fn snapshot_key(&self, key: &K) -> Result<Option<WindowKeyState<A::W>>> {
        let mut entries = Vec::new();
        for prefix in self.key_prefixes(key)? {
            self.state.backend().scan_prefix(&prefix, &mut |k, v| {
                entries.push((k.to_vec(), v.to_vec()));
                true
            })?;
        }
        let snap = WindowKeyState {
            entries,
            event_timers: self.timers.event_timers_of(key).to_vec(),
            processing_timers: self.timers.processing_timers_of(key).to_vec(),
        };
        Ok((!snap.is_empty()).then_some(snap))
    }

    /// Replaces one key's part of the operator with a [`WindowOperator::snapshot_key`]'s.
    pub fn restore_key(&mut self, key: &K, snapshot: WindowKeyState<A::W>) -> Result<()> {
        self.remove_key(key)?;
        for (k, v) in &snapshot.entries {
            self.state.backend_mut().put(k, v)?;
        }
        for (t, w) in &snapshot.event_timers {
            self.timers.register_event_time_timer(key, w, *t);
        }
        for (t, w) in &snapshot.processing_timers {
            self.timers.register_processing_time_timer(key, w, *t);
        }
        Ok(())
    }

    /// Drops everything of one key: state and timers. Returns whether it held anything.
    pub fn remove_key(&mut self, key: &K) -> Result<bool> {
        let mut had = false;
        for prefix in self.key_prefixes(key)? {
            let backend = self.state.backend_mut();
            backend.scan_prefix(&prefix, &mut |_, _| {
                had = true;
                false
            })?;
            backend.delete_prefix(&prefix)?;
        }
        Ok(self.timers.remove_key(key) > 0 || had)
    }

    fn event_time(&self) -> bool {
        self.spec.assigner.is_event_time()
    }

    /// Flink's `cleanupTime`: end - 1 + allowed lateness for event time (saturating at +infinity),
    /// the window's max timestamp for processing time.
    fn cleanup_time(&self, w: &A::W) -> Timestamp {
        if self.event_time() {
            w.max_timestamp().saturating_add(self.spec.allowed_lateness)
        } else {
            w.max_timestamp()
        }
    }

    fn is_window_late(&self, w: &A::W) -> bool {
        self.event_time() && self.cleanup_time(w) <= self.timers.current_watermark()
    }

    fn is_element_late(&self, ts: Timestamp) -> bool {
        self.event_time()
            && ts.saturating_add(self.spec.allowed_lateness) <= self.timers.current_watermark()
    }

    fn cleanup_timer(&mut self, key: &K, w: &A::W, register: bool) {
        let t = self.cleanup_time(w);
        if t == MAX_WATERMARK {
            // Global windows are never cleaned up.
            return;
        }
        match (self.event_time(), register) {
            (true, true) => self.timers.register_event_time_timer(key, w, t),
            (true, false) => self.timers.delete_event_time_timer(key, w, t),
            (false, true) => self.timers.register_processing_time_timer(key, w, t),
            (false, false) => self.timers.delete_processing_time_timer(key, w, t),
        }
    }

    /// Runs `f` with a trigger context for `window`, then applies the timer requests it made.
    fn with_trigger<R>(
        &mut self,
        key: &K,
        window: &A::W,
        f: impl FnOnce(&dyn Trigger<T, A::W>, &mut TriggerContext<'_>) -> Result<R>,
    ) -> Result<R> {
        self.state.set_namespace(window)?;
        let mut ctx = TriggerContext {
            watermark: self.timers.current_watermark(),
            clock: self.timers.clock(),
            state: &mut self.state,
            ops: &mut self.ops,
        };
        let r = f(&*self.spec.trigger, &mut ctx)?;
        for op in self.ops.drain(..) {
            match (op.domain, op.register) {
                (TimeDomain::EventTime, true) => {
                    self.timers
                        .register_event_time_timer(key, window, op.timestamp)
                }
                (TimeDomain::EventTime, false) => {
                    self.timers
                        .delete_event_time_timer(key, window, op.timestamp)
                }
                (TimeDomain::ProcessingTime, true) => {
                    self.timers
                        .register_processing_time_timer(key, window, op.timestamp)
                }
                (TimeDomain::ProcessingTime, false) => {
                    self.timers
                        .delete_processing_time_timer(key, window, op.timestamp)
                }
            }
        }
        Ok(r)
    }

    fn emit(&mut self, key: &K, window: &A::W, out: &mut Output<'_, O<C, K, T, A>>) -> Result<()> {
        self.state.set_namespace(window)?;
        self.contents
            .emit(key, window, &mut self.state, &mut self.emitted)?;
        let ts = window.max_timestamp();
        for o in self.emitted.drain(..) {
            out.collect(ts, o);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        key: &K,
        window: &A::W,
        result: TriggerResult,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        if result.is_fire() {
            self.emit(key, window, out)?;
        }
        if result.is_purge() {
            self.state.set_namespace(window)?;
            self.contents.clear(&mut self.state)?;
        }
        Ok(())
    }

    fn add_and_trigger(
        &mut self,
        key: &K,
        window: &A::W,
        ts: Timestamp,
        value: &T,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        self.state.set_namespace(window)?;
        self.contents.add(&mut self.state, value)?;
        let result =
            self.with_trigger(key, window, |t, ctx| t.on_element(value, ts, window, ctx))?;
        self.apply(key, window, result, out)?;
        self.cleanup_timer(key, window, true);
        Ok(())
    }

    /// Flink's `MergingWindowSet.addWindow`: adds `new` to the key's session windows, merging what
    /// overlaps (state, trigger timers, cleanup timers) into the cover, and returns the window the
    /// element belongs to.
    fn add_merging(&mut self, key: &K, set: &mut Vec<A::W>, new: A::W) -> Result<A::W> {
        let mut all = set.clone();
        all.push(new.clone());
        let mut merges = Vec::new();
        self.spec
            .assigner
            .merge_windows(&all, &mut |members, result| merges.push((members, result)));
        let mut actual = None;
        for (mut members, result) in merges {
            // The new window has no state of its own yet.
            if let Some(i) = members.iter().position(|m| *m == new) {
                members.remove(i);
                actual = Some(result.clone());
            }
            set.retain(|w| !members.contains(w));
            set.push(result.clone());
            if members.len() == 1 && members[0] == result {
                // The new window fell inside an existing one: nothing changes.
                continue;
            }
            self.with_trigger(key, &result, |t, ctx| t.on_merge(&result, &members, ctx))?;
            for m in members.iter().filter(|m| **m != result) {
                self.with_trigger(key, m, |t, ctx| t.clear(m, ctx))?;
                self.cleanup_timer(key, m, false);
                self.ns.clear();
                encode_into(m, &mut self.ns)?;
                self.state.set_namespace(&result)?;
                let ns = std::mem::take(&mut self.ns);
                self.contents.merge_from(&mut self.state, &ns)?;
                self.ns = ns;
            }
        }
        Ok(match actual {
            Some(w) => w,
            None => {
                set.push(new.clone());
                new
            }
        })
    }

    fn load_window_set(&mut self) -> Result<Vec<A::W>> {
        self.state.clear_namespace();
        Ok(self.window_set.get(&mut self.state)?.unwrap_or_default())
    }

    fn store_window_set(&mut self, set: &[A::W]) -> Result<()> {
        self.state.clear_namespace();
        if set.is_empty() {
            self.window_set.clear(&mut self.state)
        } else {
            self.window_set.update(&mut self.state, &set.to_vec())
        }
    }

    fn on_timer(
        &mut self,
        timer: Timer<K, A::W>,
        domain: TimeDomain,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        let Timer {
            timestamp,
            key,
            namespace: window,
        } = timer;
        self.mark_changed(&key);
        self.state.set_current_key(&key)?;
        let merging = self.spec.assigner.is_merging();
        let mut set = Vec::new();
        if merging {
            set = self.load_window_set()?;
            if !set.contains(&window) {
                // The window was merged away or already purged.
                return Ok(());
            }
        }
        self.state.set_namespace(&window)?;
        if self.contents.has_contents(&mut self.state)? {
            let result = self.with_trigger(&key, &window, |t, ctx| match domain {
                TimeDomain::EventTime => t.on_event_time(timestamp, &window, ctx),
                TimeDomain::ProcessingTime => t.on_processing_time(timestamp, &window, ctx),
            })?;
            self.apply(&key, &window, result, out)?;
        }
        let cleanup_domain = if self.event_time() {
            TimeDomain::EventTime
        } else {
            TimeDomain::ProcessingTime
        };
        if domain == cleanup_domain && timestamp == self.cleanup_time(&window) {
            self.state.set_namespace(&window)?;
            self.contents.clear(&mut self.state)?;
            self.with_trigger(&key, &window, |t, ctx| t.clear(&window, ctx))?;
            if merging {
                set.retain(|w| *w != window);
                self.store_window_set(&set)?;
            }
        }
        Ok(())
    }

    fn fire_processing_timers(
        &mut self,
        now: Timestamp,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        while let Some(t) = self.timers.pop_processing_timer(now) {
            self.on_timer(t, TimeDomain::ProcessingTime, out)?;
        }
        Ok(())
    }
}

impl<K, T, A, C> Operator<(K, T), O<C, K, T, A>> for WindowOperator<K, T, A, C>
where
    K: Key,
    T: Send + 'static,
    A: WindowAssigner,
    C: WindowContents<K, T, A::W>,
    O<C, K, T, A>: Send,
{
    fn process_element(
        &mut self,
        ts: Timestamp,
        (key, value): (K, T),
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        self.mark_changed(&key);
        self.state.set_current_key(&key)?;
        let now = if self.event_time() {
            0
        } else {
            self.timers.current_processing_time()
        };
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        self.spec.assigner.assign_windows(ts, now, &mut windows);
        let mut skipped = true;
        if self.spec.assigner.is_merging() {
            let mut set = self.load_window_set()?;
            for w in &windows {
                let actual = self.add_merging(&key, &mut set, w.clone())?;
                if self.is_window_late(&actual) {
                    set.retain(|x| *x != actual);
                    continue;
                }
                skipped = false;
                self.add_and_trigger(&key, &actual, ts, &value, out)?;
            }
            self.store_window_set(&set)?;
        } else {
            for w in &windows {
                if self.is_window_late(w) {
                    continue;
                }
                skipped = false;
                self.add_and_trigger(&key, w, ts, &value, out)?;
            }
        }
        self.windows = windows;
        if skipped && self.is_element_late(ts) {
            if let Some(tag) = &self.spec.late_tag {
                out.side.emit(tag, value);
            }
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        self.timers.advance_watermark(watermark);
        while let Some(t) = self.timers.pop_event_timer() {
            self.on_timer(t, TimeDomain::EventTime, out)?;
        }
        Ok(())
    }

    fn process_processing_time(
        &mut self,
        now: Timestamp,
        out: &mut Output<'_, O<C, K, T, A>>,
    ) -> Result<()> {
        self.fire_processing_timers(now, out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.timers.next_processing_time()
    }

    fn end_of_input(&mut self, out: &mut Output<'_, O<C, K, T, A>>) -> Result<()> {
        // A bounded job ends as if processing time had reached +infinity too (Flink's batch rule).
        self.fire_processing_timers(MAX_WATERMARK, out)
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        Ok(Some(OperatorSnapshot {
            state: self.state.backend().snapshot()?,
            timers: self.timers.snapshot()?,
        }))
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        self.state.backend_mut().restore(snapshot.state)?;
        self.timers.restore(&snapshot.timers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::SideOutputs;
    use crate::state::MemoryBackend;
    use crate::time::ManualClock;
    use crate::window::{SessionWindows, TimeWindow};

    type Ev = (String, i64);
    type Row = (String, TimeWindow, Vec<i64>);
    type ListFn = fn(&String, &TimeWindow, Vec<Ev>, &mut Vec<Row>);
    type Op = WindowOperator<String, Ev, SessionWindows, ListContents<Ev, Row, ListFn>>;

    // The key type is `String`, so the window function takes `&String`.
    #[allow(clippy::ptr_arg)]
    fn list(k: &String, w: &TimeWindow, els: Vec<Ev>, out: &mut Vec<Row>) {
        out.push((k.clone(), *w, els.into_iter().map(|e| e.1).collect()));
    }

    fn op() -> Op {
        WindowOperator::new(
            WindowSpec::new(SessionWindows::event_time(10).unwrap()),
            Arc::new(ListContents::new(list as ListFn, None)),
            Box::new(MemoryBackend::new()),
            Arc::new(ManualClock::new(0)),
        )
    }

    /// Feeds (key, ts) events with a watermark of ts - 5 after each.
    fn feed(op: &mut Op, events: &[(&str, i64)], out: &mut Vec<(i64, Row)>) {
        let mut side = SideOutputs::new();
        let mut o = Output {
            records: out,
            side: &mut side,
        };
        for (k, ts) in events {
            op.process_element(*ts, (k.to_string(), (k.to_string(), *ts)), &mut o)
                .unwrap();
            op.process_watermark(ts - 5, &mut o).unwrap();
        }
    }

    #[test]
    fn restoring_a_snapshot_mid_stream_gives_the_same_results() {
        let first = [("a", 1), ("b", 2), ("a", 8), ("a", 30), ("b", 9)];
        let second = [("a", 15), ("b", 40), ("a", 33), ("c", 41), ("a", 60)];
        let mut straight = Vec::new();
        let mut o = op();
        feed(&mut o, &first, &mut straight);
        feed(&mut o, &second, &mut straight);
        let mut side = SideOutputs::new();
        o.process_watermark(
            i64::MAX,
            &mut Output {
                records: &mut straight,
                side: &mut side,
            },
        )
        .unwrap();

        let mut resumed = Vec::new();
        let mut o = op();
        feed(&mut o, &first, &mut resumed);
        let blob = o.snapshot().unwrap().unwrap().to_bytes().unwrap();
        drop(o);
        let mut o = op();
        o.restore(OperatorSnapshot::from_bytes(&blob).unwrap())
            .unwrap();
        feed(&mut o, &second, &mut resumed);
        o.process_watermark(
            i64::MAX,
            &mut Output {
                records: &mut resumed,
                side: &mut side,
            },
        )
        .unwrap();

        let w = TimeWindow::new;
        assert_eq!(
            straight,
            vec![
                // Watermark 25 (after a@30) closes b's and a's first sessions; b@9 and a@15 then
                // arrive too late for them and are dropped.
                (11, ("b".to_string(), w(2, 12), vec![2])),
                (17, ("a".to_string(), w(1, 18), vec![1, 8])),
                (42, ("a".to_string(), w(30, 43), vec![30, 33])),
                (49, ("b".to_string(), w(40, 50), vec![40])),
                (50, ("c".to_string(), w(41, 51), vec![41])),
                (69, ("a".to_string(), w(60, 70), vec![60])),
            ]
        );
        assert_eq!(resumed, straight);
    }

    #[test]
    fn keys_moved_one_by_one_give_the_same_results() {
        let first = [("a", 1), ("b", 2), ("a", 8), ("a", 30), ("b", 9), ("c", 31)];
        let second = [("a", 15), ("b", 40), ("a", 33), ("c", 41), ("a", 60)];
        let run = |moved: bool| {
            let mut out = Vec::new();
            let mut o = op();
            feed(&mut o, &first, &mut out);
            if moved {
                // Each key's part goes to a new operator by itself (through bytes, as in a
                // changelog), and `c`'s is dropped from the old one first to show it is gone.
                // A fresh operator at the old one's watermark (it has no timers to fire).
                let mut fresh = op();
                let (mut none, mut side) = (Vec::new(), SideOutputs::new());
                fresh
                    .process_watermark(
                        o.timers().current_watermark(),
                        &mut Output {
                            records: &mut none,
                            side: &mut side,
                        },
                    )
                    .unwrap();
                // `b`'s only session closed at watermark 25 and its 9 came late: it holds
                // nothing.
                assert_eq!(o.snapshot_key(&"b".to_string()).unwrap(), None);
                for key in ["a", "c"] {
                    let key = key.to_string();
                    let snap = o
                        .snapshot_key(&key)
                        .unwrap()
                        .expect("the key holds windows");
                    let bytes = rmp_serde::to_vec(&snap).unwrap();
                    assert!(o.remove_key(&key).unwrap());
                    assert_eq!(o.snapshot_key(&key).unwrap(), None);
                    assert!(!o.remove_key(&key).unwrap());
                    fresh
                        .restore_key(&key, rmp_serde::from_slice(&bytes).unwrap())
                        .unwrap();
                }
                assert_eq!(o.timers().num_event_timers(), 0);
                assert!(o.state().backend().is_empty());
                o = fresh;
            }
            feed(&mut o, &second, &mut out);
            let mut side = SideOutputs::new();
            o.process_watermark(
                i64::MAX,
                &mut Output {
                    records: &mut out,
                    side: &mut side,
                },
            )
            .unwrap();
            out
        };
        let straight = run(false);
        assert_eq!(straight.len(), 6, "{straight:?}");
        assert_eq!(run(true), straight);
    }
}
