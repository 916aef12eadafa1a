//! The operator interface shared by the keyed process operator, the window operator and custom
//! operators, plus typed side outputs.
//!
//! As in Arroyo's `arroyo-operator`, an operator has one required method (per element) and default
//! no-op hooks for watermarks, processing time and the end of input.

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::Snapshot;
use crate::time::Timestamp;

/// What a key must be: ordered (timers), hashable (partitioning), serializable (state) and sendable
/// (workers). Implemented for every such type.
pub trait Key: Clone + Ord + Hash + Serialize + DeserializeOwned + Send + 'static {}

impl<T: Clone + Ord + Hash + Serialize + DeserializeOwned + Send + 'static> Key for T {}

/// Names a typed side output (Flink's `OutputTag<T>`). Two tags are the same output when they have
/// the same name and element type.
pub struct OutputTag<T> {
    name: Arc<str>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag {
            name: self.name.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for OutputTag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OutputTag").field(&self.name).finish()
    }
}

impl<T: Send + 'static> OutputTag<T> {
    /// A tag called `name`.
    pub fn new(name: &str) -> Self {
        OutputTag {
            name: Arc::from(name),
            _t: PhantomData,
        }
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> (Arc<str>, TypeId) {
        (self.name.clone(), TypeId::of::<T>())
    }
}

trait ErasedVec: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_any(&self) -> &dyn Any;
    fn append_to(self: Box<Self>, other: &mut dyn ErasedVec);
    fn len(&self) -> usize;
}

impl<T: Send + 'static> ErasedVec for Vec<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn append_to(mut self: Box<Self>, other: &mut dyn ErasedVec) {
        if let Some(v) = other.as_any_mut().downcast_mut::<Vec<T>>() {
            v.append(&mut self);
        }
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Side-output elements collected per tag, in emission order.
#[derive(Default)]
pub struct SideOutputs {
    outputs: FxHashMap<(Arc<str>, TypeId), Box<dyn ErasedVec>>,
}

impl fmt::Debug for SideOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for ((name, _), v) in &self.outputs {
            m.entry(name, &v.len());
        }
        m.finish()
    }
}

impl SideOutputs {
    /// No side outputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `value` to the output named by `tag`.
    pub fn emit<T: Send + 'static>(&mut self, tag: &OutputTag<T>, value: T) {
        let v = self
            .outputs
            .entry(tag.id())
            .or_insert_with(|| Box::new(Vec::<T>::new()));
        if let Some(v) = v.as_any_mut().downcast_mut::<Vec<T>>() {
            v.push(value);
        }
    }

    /// The elements collected for `tag` so far.
    pub fn get<T: Send + 'static>(&self, tag: &OutputTag<T>) -> &[T] {
        self.outputs
            .get(&tag.id())
            .and_then(|v| v.as_any().downcast_ref::<Vec<T>>())
            .map_or(&[], |v| v.as_slice())
    }

    /// Removes and returns the elements collected for `tag`.
    pub fn take<T: Send + 'static>(&mut self, tag: &OutputTag<T>) -> Vec<T> {
        self.outputs
            .get_mut(&tag.id())
            .and_then(|v| v.as_any_mut().downcast_mut::<Vec<T>>())
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.outputs.values().all(|v| v.len() == 0)
    }

    /// Appends every output of `other` to this one.
    pub fn merge(&mut self, other: SideOutputs) {
        for (id, v) in other.outputs {
            match self.outputs.get_mut(&id) {
                Some(mine) => v.append_to(&mut **mine),
                None => {
                    self.outputs.insert(id, v);
                }
            }
        }
    }
}

/// Where an operator puts what it emits: timestamped records for the main output, and side outputs.
pub struct Output<'a, O> {
    /// Main-output records with their timestamps.
    pub records: &'a mut Vec<(Timestamp, O)>,
    /// Side outputs.
    pub side: &'a mut SideOutputs,
}

impl<O> Output<'_, O> {
    /// Emits a main-output record.
    #[inline]
    pub fn collect(&mut self, timestamp: Timestamp, value: O) {
        self.records.push((timestamp, value));
    }

    /// Re-borrows for a shorter lifetime.
    pub fn reborrow(&mut self) -> Output<'_, O> {
        Output {
            records: self.records,
            side: self.side,
        }
    }
}

/// A consistent copy of a keyed operator: its state backend's entries and its timers (which include
/// the watermark it had seen).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorSnapshot {
    /// The keyed state.
    pub state: Snapshot,
    /// The encoded timer service.
    pub timers: Vec<u8>,
}

impl OperatorSnapshot {
    /// Serializes the snapshot into one blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec(self).map_err(|e| Error::codec("operator snapshot", e))
    }

    /// Reads a snapshot written by [`OperatorSnapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::codec("operator snapshot", e))
    }
}

/// A stream operator: called per element, per watermark advance and per processing-time tick.
pub trait Operator<I, O>: Send {
    /// Handles one element with its timestamp.
    fn process_element(
        &mut self,
        timestamp: Timestamp,
        value: I,
        out: &mut Output<'_, O>,
    ) -> Result<()>;

    /// Handles an advance of the input watermark (already combined over inputs, and monotonic).
    fn process_watermark(&mut self, _watermark: Timestamp, _out: &mut Output<'_, O>) -> Result<()> {
        Ok(())
    }

    /// Handles processing time reaching `now` (fires due processing-time timers).
    fn process_processing_time(&mut self, _now: Timestamp, _out: &mut Output<'_, O>) -> Result<()> {
        Ok(())
    }

    /// The earliest processing time at which [`Operator::process_processing_time`] has work, if any.
    fn next_processing_time(&self) -> Option<Timestamp> {
        None
    }

    /// Called once after the last element and the final watermark.
    fn end_of_input(&mut self, _out: &mut Output<'_, O>) -> Result<()> {
        Ok(())
    }

    /// A consistent copy of the operator's state and timers, or `None` if it keeps none.
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        Ok(None)
    }

    /// Replaces the operator's state and timers with a snapshot taken by [`Operator::snapshot`].
    fn restore(&mut self, _snapshot: OperatorSnapshot) -> Result<()> {
        Err(Error::Config(
            "this operator keeps no state to restore".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_outputs_are_per_tag_and_type() {
        let late = OutputTag::<i64>::new("late");
        let late_str = OutputTag::<String>::new("late");
        let other = OutputTag::<i64>::new("other");
        let mut s = SideOutputs::new();
        assert!(s.is_empty());
        s.emit(&late, 1);
        s.emit(&late_str, "x".to_string());
        s.emit(&late, 2);
        assert_eq!(s.get(&late), &[1, 2]);
        assert_eq!(s.get(&late_str), &["x".to_string()]);
        assert!(s.get(&other).is_empty());
        let mut t = SideOutputs::new();
        t.emit(&late, 3);
        t.emit(&other, 4);
        s.merge(t);
        assert_eq!(s.take(&late), vec![1, 2, 3]);
        assert_eq!(s.take(&other), vec![4]);
        assert!(s.take(&late).is_empty());
    }
}
