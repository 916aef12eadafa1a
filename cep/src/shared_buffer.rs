//! The shared buffer: every event taken by some partial match is stored once, and partial matches
//! are chains of versioned edges between buffer nodes, so common prefixes are stored once
//! (Flink's `SharedBuffer` and `SharedBufferAccessor`).
//!
//! Reference counts mirror Flink's exactly: nodes and edges are locked by the computation states
//! that point at them and released when those states end; an edge whose count drops to zero is
//! removed and releases the node it points to. Extraction follows only edges whose version is
//! compatible, so each computation state recovers exactly its own events.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::{smallvec, SmallVec};

use crate::dewey::Dewey;

/// Identity of an event within one key's buffer: its timestamp and its arrival index among the
/// events with that timestamp. Ordered by timestamp, then index, like Flink's `EventId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// Event time.
    pub ts: i64,
    /// Arrival index among the events with the same timestamp.
    pub id: u32,
}

/// A buffer node: an event as taken by one stage (`page`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub event: EventId,
    pub page: u16,
}

#[derive(Clone, Debug)]
pub(crate) struct Edge {
    pub(crate) target: Option<NodeId>,
    pub(crate) version: Dewey,
    pub(crate) lock: i32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Node {
    pub(crate) lock: i32,
    /// Usually few: one per partial match that took the event into the same stage.
    pub(crate) edges: SmallVec<[Edge; 3]>,
}

/// One extracted path: pages in order of first appearance, each with its events in order.
pub type Path = Vec<(u16, Vec<EventId>)>;

/// Releases a lock; true when no lock is left (Flink's `Lockable.release`).
fn release(lock: &mut i32) -> bool {
    if *lock <= 0 {
        return true;
    }
    *lock -= 1;
    *lock == 0
}

/// The per-key shared buffer of one pattern.
#[derive(Clone, Debug)]
pub struct SharedBuffer<E> {
    pub(crate) events: FxHashMap<EventId, (Arc<E>, i32)>,
    pub(crate) counters: FxHashMap<i64, u32>,
    pub(crate) nodes: FxHashMap<NodeId, Node>,
}

impl<E> Default for SharedBuffer<E> {
    fn default() -> Self {
        SharedBuffer {
            events: FxHashMap::default(),
            counters: FxHashMap::default(),
            nodes: FxHashMap::default(),
        }
    }
}

impl<E> SharedBuffer<E> {
    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.counters.clear();
        self.nodes.clear();
    }

    /// Number of events held.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Stores an event with one lock (held while the event is being processed).
    pub fn register_event(&mut self, event: Arc<E>, ts: i64) -> EventId {
        let counter = self.counters.entry(ts).or_insert(0);
        let id = EventId { ts, id: *counter };
        *counter += 1;
        self.events.insert(id, (event, 1));
        id
    }

    /// The event stored under `id`.
    pub fn event(&self, id: EventId) -> Option<&Arc<E>> {
        self.events.get(&id).map(|e| &e.0)
    }

    /// Drops one lock on an event; the event goes when none is left.
    pub fn release_event(&mut self, id: EventId) {
        if let Some(e) = self.events.get_mut(&id) {
            if release(&mut e.1) {
                self.events.remove(&id);
            }
        }
    }

    /// Stores `event` as taken by `page`, with an edge (labelled `version`) to `previous`.
    pub fn put(
        &mut self,
        page: u16,
        event: EventId,
        previous: Option<NodeId>,
        version: &Dewey,
    ) -> NodeId {
        if let Some(prev) = previous {
            self.lock_node(prev, version);
        }
        let id = NodeId { event, page };
        let node = match self.nodes.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                if let Some(e) = self.events.get_mut(&event) {
                    e.1 += 1;
                }
                v.insert(Node::default())
            }
        };
        node.edges.push(Edge {
            target: previous,
            version: version.clone(),
            lock: 0,
        });
        id
    }

    /// Locks a node and its edges compatible with `version`.
    pub fn lock_node(&mut self, id: NodeId, version: &Dewey) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lock += 1;
            for e in &mut node.edges {
                if version.is_compatible_with(&e.version) {
                    e.lock += 1;
                }
            }
        }
    }

    /// Releases a node locked with `version`, and transitively what only it kept alive.
    pub fn release_node(&mut self, id: NodeId, version: &Dewey) {
        let mut stack: SmallVec<[(NodeId, Dewey); 4]> = smallvec![(id, version.clone())];
        while let Some((cur, ver)) = stack.pop() {
            let std::collections::hash_map::Entry::Occupied(mut entry) = self.nodes.entry(cur)
            else {
                // Flink stops the whole release here (`break`), and so do we.
                break;
            };
            let node = entry.get_mut();
            let mut i = 0;
            while i < node.edges.len() {
                let e = &mut node.edges[i];
                if ver.is_compatible_with(&e.version) && release(&mut e.lock) {
                    let e = node.edges.remove(i);
                    if let Some(t) = e.target {
                        stack.push((t, e.version));
                    }
                    continue;
                }
                i += 1;
            }
            if release(&mut node.lock) {
                entry.remove();
                self.release_event(cur.event);
            }
        }
    }

    /// All paths that end at `id` and are compatible with `version`, in Flink's order.
    pub fn extract(&self, id: NodeId, version: &Dewey) -> Vec<Path> {
        let mut result = Vec::new();
        if !self.nodes.contains_key(&id) {
            return result;
        }
        // Each state: (node or end, version, path so far from the newest node backwards).
        let mut stack: Vec<(Option<NodeId>, Dewey, Vec<NodeId>)> =
            vec![(Some(id), version.clone(), Vec::new())];
        while let Some((entry, ver, mut path)) = stack.pop() {
            match entry {
                None => {
                    let mut complete: Path = Vec::new();
                    for n in path.iter().rev() {
                        match complete.iter_mut().find(|(p, _)| *p == n.page) {
                            Some((_, evs)) => evs.push(n.event),
                            None => complete.push((n.page, vec![n.event])),
                        }
                    }
                    result.push(complete);
                }
                Some(nid) => {
                    path.push(nid);
                    let Some(node) = self.nodes.get(&nid) else {
                        continue;
                    };
                    let compatible: SmallVec<[&Edge; 4]> = node
                        .edges
                        .iter()
                        .filter(|e| ver.is_compatible_with(&e.version))
                        .collect();
                    // The path is copied for every branch but the last, which takes it over.
                    if let Some((last, rest)) = compatible.split_last() {
                        for e in rest {
                            stack.push((e.target, e.version.clone(), path.clone()));
                        }
                        stack.push((last.target, last.version.clone(), path));
                    }
                }
            }
        }
        result
    }

    /// Forgets the per-timestamp counters below `ts`: no event earlier than it will come.
    pub fn advance_time(&mut self, ts: i64) {
        if self.counters.len() > 1 || self.counters.keys().any(|&k| k < ts) {
            self.counters.retain(|&k, _| k >= ts);
        }
    }
}
