//! The shared buffer: every event taken by some partial match is stored once, and partial matches
//! are chains of versioned edges between buffer nodes, so common prefixes are stored once
//! (Flink's `SharedBuffer` and `SharedBufferAccessor`).
//!
//! Reference counts mirror Flink's exactly: nodes and edges are locked by the computation states
//! that point at them and released when those states end; an edge whose count drops to zero is
//! removed and releases the node it points to. Extraction follows only edges whose version is
//! compatible, so each computation state recovers exactly its own events.
//!
//! Events and nodes live in slabs (vectors with free lists) and refer to each other by index,
//! so the hot path does no hashing. A node's identity is still Flink's, `(event, page)`: a
//! [`NodeId`] carries it next to the node's index, and a reference whose index no longer holds
//! that node resolves as Flink's map lookup would (to the node re-created under the same
//! identity, if any, else to nothing).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::dewey::Dewey;

/// Per timestamp, the next arrival index: what makes an event's [`EventId`].
pub(crate) type Counters = SmallVec<[(i64, u32); 2]>;

/// The arrival index of the next event at `ts`, counted in `counters`.
pub(crate) fn next_arrival(counters: &mut Counters, ts: i64) -> u32 {
    match counters.iter_mut().rev().find(|c| c.0 == ts) {
        Some(c) => {
            c.1 += 1;
            c.1 - 1
        }
        None => {
            // Events come in timestamp order, so the counters of earlier timestamps are done
            // with (Flink drops them in `advanceTime`, which runs before every event; the
            // matchers skip it when nothing can time out, so they would pile up).
            counters.retain(|c| c.0 > ts);
            counters.push((ts, 1));
            0
        }
    }
}

/// Identity of an event within one key's buffer: its timestamp and its arrival index among the
/// events with that timestamp. Ordered by timestamp, then index, like Flink's `EventId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// Event time.
    pub ts: i64,
    /// Arrival index among the events with the same timestamp.
    pub id: u32,
}

/// An event of the buffer: its identity and where it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvRef {
    /// The event's identity.
    pub id: EventId,
    /// Its index in the buffer's event slab.
    pub slot: u32,
}

/// A buffer node: an event as taken by one stage (`page`), and where the node is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeId {
    /// The event.
    pub event: EventId,
    /// The stage that took it.
    pub page: u16,
    /// Index in the node slab (checked against `event` and `page` on every use).
    slot: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Edge {
    pub(crate) target: Option<NodeId>,
    pub(crate) version: Dewey,
    pub(crate) lock: i32,
}

#[derive(Clone, Debug)]
struct Node {
    event: EventId,
    /// The event's slot.
    ev: u32,
    page: u16,
    live: bool,
    lock: i32,
    /// Usually few: one per partial match that took the event into the same stage.
    edges: SmallVec<[Edge; 2]>,
}

#[derive(Clone, Debug)]
struct EventSlot<E> {
    id: EventId,
    /// `None` when the slot is free.
    event: Option<Arc<E>>,
    lock: i32,
}

/// One extracted path: `(page, event)` with the pages in order of first appearance, the events
/// of a page together and in order (Flink's map of stage names to event lists, flattened).
pub type Path = SmallVec<[(u16, EvRef); 8]>;

/// The paths of one extraction; almost always one.
pub type Paths = SmallVec<[Path; 1]>;

/// Groups a path given newest node first by page, pages in order of first appearance.
fn group_by_page(newest_first: &[(u16, EvRef)]) -> Path {
    let mut p = Path::new();
    for &(page, ev) in newest_first.iter().rev() {
        // The events of a stage are usually consecutive: then this appends.
        match p.iter().rposition(|(pg, _)| *pg == page) {
            Some(i) if i + 1 == p.len() => p.push((page, ev)),
            Some(i) => p.insert(i + 1, (page, ev)),
            None => p.push((page, ev)),
        }
    }
    p
}

/// The groups of a path: `(page, events)`, in order.
pub fn page_groups(path: &[(u16, EvRef)]) -> impl Iterator<Item = (u16, &[(u16, EvRef)])> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let page = rest.first()?.0;
        let n = rest.iter().take_while(|(p, _)| *p == page).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        Some((page, group))
    })
}

fn node_ref(slots: &FxHashMap<(EventId, u16), u32>, event: EventId, page: u16) -> NodeId {
    NodeId {
        event,
        page,
        slot: slots.get(&(event, page)).copied().unwrap_or(u32::MAX),
    }
}

/// Releases a lock; true when no lock is left (Flink's `Lockable.release`).
fn release(lock: &mut i32) -> bool {
    if *lock <= 0 {
        return true;
    }
    *lock -= 1;
    *lock == 0
}

/// A node as a snapshot gives it: `(event, page, lock, edges)`, each edge `(target by
/// identity, version, lock)`.
pub(crate) type RestoredNode = (EventId, u16, i32, Vec<(Option<(EventId, u16)>, Dewey, i32)>);

/// The per-key shared buffer of one pattern.
#[derive(Clone, Debug)]
pub struct SharedBuffer<E> {
    events: Vec<EventSlot<E>>,
    free_events: Vec<u32>,
    live_events: usize,
    /// Per timestamp, the next arrival index; few (the timestamps not yet passed by time), and
    /// the newest last, so a short vector beats a map.
    counters: Counters,
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    /// The event being processed (the only one nodes are created for) and its live nodes as
    /// `(page, slot)`: how `put` finds an existing node.
    current: Option<EventId>,
    current_nodes: SmallVec<[(u16, u32); 4]>,
    /// Pages of the current event whose node was removed during its processing: a node
    /// created again under such an identity is recorded in `aliases`.
    current_removed: SmallVec<[u16; 2]>,
    /// Nodes that can be reached by identity but not by the index held by older references:
    /// nodes re-created under the identity of a removed one, and nodes restored from a
    /// snapshot. Usually empty.
    aliases: FxHashMap<(EventId, u16), u32>,
}

impl<E> Default for SharedBuffer<E> {
    fn default() -> Self {
        SharedBuffer {
            events: Vec::new(),
            free_events: Vec::new(),
            live_events: 0,
            counters: SmallVec::new(),
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            current: None,
            current_nodes: SmallVec::new(),
            current_removed: SmallVec::new(),
            aliases: FxHashMap::default(),
        }
    }
}

impl<E> SharedBuffer<E> {
    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.live_events == 0
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.free_events.clear();
        self.live_events = 0;
        self.counters.clear();
        self.nodes.clear();
        self.free_nodes.clear();
        self.current = None;
        self.current_nodes.clear();
        self.current_removed.clear();
        self.aliases.clear();
    }

    /// Number of events held.
    pub fn event_count(&self) -> usize {
        self.live_events
    }

    fn alloc_event(&mut self, id: EventId, event: Arc<E>, lock: i32) -> u32 {
        self.live_events += 1;
        let slot = EventSlot {
            id,
            event: Some(event),
            lock,
        };
        match self.free_events.pop() {
            Some(s) => {
                self.events[s as usize] = slot;
                s
            }
            None => {
                crate::pq::reserve_small(&mut self.events);
                self.events.push(slot);
                (self.events.len() - 1) as u32
            }
        }
    }

    /// Stores an event with one lock (held while the event is being processed); nodes are then
    /// created for it by [`SharedBuffer::put`].
    pub fn register_event(&mut self, event: Arc<E>, ts: i64) -> EvRef {
        let id = EventId {
            ts,
            id: next_arrival(&mut self.counters, ts),
        };
        let slot = self.alloc_event(id, event, 1);
        self.current = Some(id);
        self.current_nodes.clear();
        self.current_removed.clear();
        EvRef { id, slot }
    }

    /// The event `ev` refers to, if still held.
    pub fn event(&self, ev: EvRef) -> Option<&Arc<E>> {
        let s = self.events.get(ev.slot as usize)?;
        if s.id == ev.id {
            s.event.as_ref()
        } else {
            None
        }
    }

    /// Drops one lock on an event; the event goes when none is left.
    pub fn release_event(&mut self, ev: EvRef) {
        let Some(s) = self.events.get_mut(ev.slot as usize) else {
            return;
        };
        if s.id != ev.id || s.event.is_none() {
            return;
        }
        if release(&mut s.lock) {
            s.event = None;
            self.live_events -= 1;
            self.free_events.push(ev.slot);
        }
    }

    /// The slot of the live node `n` refers to, looked up by identity as Flink does.
    #[inline]
    fn resolve(&self, n: NodeId) -> Option<u32> {
        if let Some(node) = self.nodes.get(n.slot as usize) {
            if node.live && node.event == n.event && node.page == n.page {
                return Some(n.slot);
            }
        }
        self.resolve_slow(n)
    }

    #[cold]
    fn resolve_slow(&self, n: NodeId) -> Option<u32> {
        if self.current == Some(n.event) {
            if let Some(&(_, s)) = self.current_nodes.iter().find(|c| c.0 == n.page) {
                return Some(s);
            }
        }
        self.aliases.get(&(n.event, n.page)).copied()
    }

    fn alloc_node(&mut self, node: Node) -> u32 {
        match self.free_nodes.pop() {
            Some(s) => {
                self.nodes[s as usize] = node;
                s
            }
            None => {
                crate::pq::reserve_small(&mut self.nodes);
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn remove_node(&mut self, slot: u32) {
        let node = &mut self.nodes[slot as usize];
        node.live = false;
        node.edges.clear();
        let (event, page, ev) = (
            node.event,
            node.page,
            EvRef {
                id: node.event,
                slot: node.ev,
            },
        );
        self.free_nodes.push(slot);
        if self.current == Some(event) {
            if let Some(i) = self.current_nodes.iter().position(|c| c.0 == page) {
                self.current_nodes.swap_remove(i);
            }
            self.current_removed.push(page);
        }
        if !self.aliases.is_empty() && self.aliases.get(&(event, page)) == Some(&slot) {
            self.aliases.remove(&(event, page));
        }
        self.release_event(ev);
    }

    /// Stores `event` as taken by `page`, with an edge (labelled `version`) to `previous`.
    pub fn put(
        &mut self,
        page: u16,
        event: EvRef,
        previous: Option<NodeId>,
        version: &Dewey,
    ) -> NodeId {
        if let Some(prev) = previous {
            self.lock_node(prev, version);
        }
        let slot = match self.find(event.id, page) {
            Some(s) => s,
            None => {
                if let Some(e) = self.events.get_mut(event.slot as usize) {
                    if e.id == event.id && e.event.is_some() {
                        e.lock += 1;
                    }
                }
                let s = self.alloc_node(Node {
                    event: event.id,
                    ev: event.slot,
                    page,
                    live: true,
                    lock: 0,
                    edges: SmallVec::new(),
                });
                if self.current == Some(event.id) {
                    self.current_nodes.push((page, s));
                    if self.current_removed.contains(&page) {
                        self.aliases.insert((event.id, page), s);
                    }
                } else {
                    // Not the event being processed (not done by the matcher): only reachable
                    // by identity.
                    self.aliases.insert((event.id, page), s);
                }
                s
            }
        };
        self.nodes[slot as usize].edges.push(Edge {
            target: previous,
            version: version.clone(),
            lock: 0,
        });
        NodeId {
            event: event.id,
            page,
            slot,
        }
    }

    /// The live node `(event, page)`, if any.
    fn find(&self, event: EventId, page: u16) -> Option<u32> {
        if self.current == Some(event) {
            if let Some(&(_, s)) = self.current_nodes.iter().find(|c| c.0 == page) {
                return Some(s);
            }
        }
        if self.aliases.is_empty() {
            None
        } else {
            self.aliases.get(&(event, page)).copied()
        }
    }

    /// Locks a node and its edges compatible with `version`.
    pub fn lock_node(&mut self, id: NodeId, version: &Dewey) {
        if let Some(s) = self.resolve(id) {
            let node = &mut self.nodes[s as usize];
            node.lock += 1;
            for e in &mut node.edges {
                if version.is_compatible_with(&e.version) {
                    e.lock += 1;
                }
            }
        }
    }

    /// Per node: whether it is live, its lock count and its edges' lock counts (for checks).
    #[cfg(debug_assertions)]
    pub(crate) fn lock_counts(&self) -> Vec<(bool, i32, Vec<i32>)> {
        self.nodes
            .iter()
            .map(|n| (n.live, n.lock, n.edges.iter().map(|e| e.lock).collect()))
            .collect()
    }

    /// Releases a node locked with `version`, and transitively what only it kept alive.
    pub fn release_node(&mut self, id: NodeId, version: &Dewey) {
        // The first node is released with the caller's version, without copying it; nodes whose
        // last edge to them goes follow on a stack (in Flink's order: last pushed first).
        let mut stack: SmallVec<[(NodeId, Dewey); 4]> = SmallVec::new();
        if !self.release_one(id, version, &mut stack) {
            return;
        }
        while let Some((cur, ver)) = stack.pop() {
            if !self.release_one(cur, &ver, &mut stack) {
                // Flink stops the whole release here (`break`), and so do we.
                break;
            }
        }
    }

    /// Releases node `id` with `ver`, pushing the targets of the edges removed; false if the
    /// node does not exist.
    #[inline]
    fn release_one(
        &mut self,
        id: NodeId,
        ver: &Dewey,
        stack: &mut SmallVec<[(NodeId, Dewey); 4]>,
    ) -> bool {
        let Some(s) = self.resolve(id) else {
            return false;
        };
        let node = &mut self.nodes[s as usize];
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
            self.remove_node(s);
        }
        true
    }

    /// All paths that end at `id` and are compatible with `version`, in Flink's order (only the
    /// first when `first_only`: the others are then not needed).
    pub fn extract(&self, id: NodeId, version: &Dewey, first_only: bool) -> Paths {
        let mut paths = Paths::new();
        self.walk(id, version, first_only, |p| paths.push(group_by_page(p)));
        paths
    }

    /// Appends the first path of [`extract`](Self::extract) to `out`, oldest event first and
    /// not grouped by page (a page's events keep their order): what a condition reading the
    /// partial match needs, without the grouping. False when there is none.
    pub fn extract_first_in_order(&self, id: NodeId, version: &Dewey, out: &mut Path) -> bool {
        let mut found = false;
        self.walk(id, version, true, |newest_first| {
            out.extend(newest_first.iter().rev().copied());
            found = true;
        });
        found
    }

    /// Calls `found` with each path from `id` back to a first node along edges compatible
    /// with `version` (its `(page, event)` list, newest first), in Flink's order.
    fn walk(
        &self,
        id: NodeId,
        version: &Dewey,
        first_only: bool,
        mut found: impl FnMut(&[(u16, EvRef)]),
    ) {
        if first_only {
            let mut path: SmallVec<[(u16, EvRef); 16]> = SmallVec::new();
            if self.descend(id, version, &mut path) {
                #[cfg(debug_assertions)]
                {
                    let mut first = None;
                    self.walk_all(id, version, true, |p| first = Some(p.to_vec()));
                    assert_eq!(first.as_deref(), Some(&path[..]), "descent and walk differ");
                }
                found(&path);
                return;
            }
        }
        self.walk_all(id, version, first_only, found);
    }

    /// The first path of [`walk`](Self::walk) when no branch on its way dead-ends: the walk
    /// explores the last compatible edge of a node first, so following that edge from each node
    /// finds the same path without a stack. False (with `path` in any state) at a dead end
    /// (a node missing, or none of its edges compatible), where the walk would backtrack.
    fn descend(
        &self,
        id: NodeId,
        version: &Dewey,
        path: &mut SmallVec<[(u16, EvRef); 16]>,
    ) -> bool {
        let (mut cur, mut ver) = (id, version);
        loop {
            let Some(s) = self.resolve(cur) else {
                return false;
            };
            let node = &self.nodes[s as usize];
            path.push((
                cur.page,
                EvRef {
                    id: cur.event,
                    slot: node.ev,
                },
            ));
            match node
                .edges
                .iter()
                .rev()
                .find(|e| ver.is_compatible_with(&e.version))
            {
                Some(Edge {
                    target: Some(next),
                    version,
                    ..
                }) => (cur, ver) = (*next, version),
                Some(Edge { target: None, .. }) => return true,
                None => return false,
            }
        }
    }

    /// [`walk`](Self::walk) as a depth-first search, backtracking at dead ends.
    fn walk_all(
        &self,
        id: NodeId,
        version: &Dewey,
        first_only: bool,
        mut found: impl FnMut(&[(u16, EvRef)]),
    ) {
        if self.resolve(id).is_none() {
            return;
        }
        // A depth-first walk from the newest node back to the first, with one path buffer: each
        // stacked branch remembers how long the path was where it forks (Flink copies the path
        // per branch; the branches come out in the same order). Branches borrow their edge's
        // version from the buffer.
        let mut path: SmallVec<[(u16, EvRef); 16]> = SmallVec::new();
        let mut stack: SmallVec<[(Option<NodeId>, &Dewey, usize); 8]> = SmallVec::new();
        stack.push((Some(id), version, 0));
        while let Some((entry, ver, depth)) = stack.pop() {
            path.truncate(depth);
            match entry {
                None => {
                    found(&path);
                    if first_only {
                        break;
                    }
                }
                Some(nid) => {
                    let Some(s) = self.resolve(nid) else {
                        // A missing node ends this branch without a path.
                        continue;
                    };
                    let node = &self.nodes[s as usize];
                    path.push((
                        nid.page,
                        EvRef {
                            id: nid.event,
                            slot: node.ev,
                        },
                    ));
                    for e in &node.edges {
                        if ver.is_compatible_with(&e.version) {
                            stack.push((e.target, &e.version, depth + 1));
                        }
                    }
                }
            }
        }
    }

    /// The events held: identity, event, lock count (for snapshots).
    pub(crate) fn snapshot_events(&self) -> impl Iterator<Item = (EventId, &Arc<E>, i32)> + '_ {
        self.events
            .iter()
            .filter_map(|e| e.event.as_ref().map(|ev| (e.id, ev, e.lock)))
    }

    /// The per-timestamp counters (for snapshots).
    pub(crate) fn counters(&self) -> &[(i64, u32)] {
        &self.counters
    }

    /// The live nodes: identity, lock count, edges (for snapshots).
    pub(crate) fn snapshot_nodes(&self) -> impl Iterator<Item = (NodeId, i32, &[Edge])> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.live)
            .map(|(i, n)| {
                let id = NodeId {
                    event: n.event,
                    page: n.page,
                    slot: i as u32,
                };
                (id, n.lock, &n.edges[..])
            })
    }

    /// A buffer rebuilt from a snapshot: events with their lock counts, counters, and nodes
    /// `(event, page, lock, edges)` whose edges' targets are given by identity.
    pub(crate) fn restore(
        events: Vec<(EventId, Arc<E>, i32)>,
        counters: &[(i64, u32)],
        nodes: Vec<RestoredNode>,
    ) -> SharedBuffer<E> {
        let mut b = SharedBuffer::default();
        let mut event_slots: FxHashMap<EventId, u32> = FxHashMap::default();
        // A repeated identity replaces the earlier entry, as inserting into Flink's maps does.
        for (id, e, lock) in events {
            match event_slots.get(&id) {
                Some(&slot) => {
                    b.events[slot as usize].event = Some(e);
                    b.events[slot as usize].lock = lock;
                }
                None => {
                    let slot = b.alloc_event(id, e, lock);
                    event_slots.insert(id, slot);
                }
            }
        }
        b.counters.extend(counters.iter().copied());
        let mut last: FxHashMap<(EventId, u16), usize> = FxHashMap::default();
        for (i, (event, page, _, _)) in nodes.iter().enumerate() {
            last.insert((*event, *page), i);
        }
        let nodes: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .filter(|(i, (event, page, _, _))| last[&(*event, *page)] == *i)
            .map(|(_, n)| n)
            .collect();
        let mut node_slots: FxHashMap<(EventId, u16), u32> = FxHashMap::default();
        for (i, (event, page, _, _)) in nodes.iter().enumerate() {
            node_slots.insert((*event, *page), i as u32);
        }
        for (event, page, lock, edges) in nodes {
            let edges = edges
                .into_iter()
                .map(|(target, version, lock)| Edge {
                    target: target.map(|(e, p)| node_ref(&node_slots, e, p)),
                    version,
                    lock,
                })
                .collect();
            b.nodes.push(Node {
                event,
                // An event not held (not in a consistent state) reads as missing, as in Flink.
                ev: event_slots.get(&event).copied().unwrap_or(u32::MAX),
                page,
                live: true,
                lock,
                edges,
            });
        }
        b
    }

    /// A reference to the node `(event, page)` (for restoring snapshots): its slot if the node
    /// exists, else a reference that resolves to nothing.
    pub(crate) fn node_ref(&self, event: EventId, page: u16) -> NodeId {
        let slot = self
            .nodes
            .iter()
            .position(|n| n.live && n.event == event && n.page == page);
        NodeId {
            event,
            page,
            slot: slot.map_or(u32::MAX, |s| s as u32),
        }
    }

    /// Forgets the per-timestamp counters below `ts`: no event earlier than it will come.
    pub fn advance_time(&mut self, ts: i64) {
        self.counters.retain(|c| c.0 >= ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with two edges compatible with the version extracted: the first path (what
    /// conditions, timeouts and matches under no skip read) is the walk's first, along the
    /// edge put last.
    #[test]
    fn the_first_path_follows_the_last_compatible_edge() {
        let mut b: SharedBuffer<u32> = SharedBuffer::default();
        let e1 = b.register_event(Arc::new(1), 1);
        let n1 = b.put(0, e1, None, &Dewey::new(1));
        let e2 = b.register_event(Arc::new(2), 2);
        let n2 = b.put(0, e2, None, &Dewey::new(1));
        let e3 = b.register_event(Arc::new(3), 3);
        let v0 = Dewey::new(1).add_stage();
        let v1 = v0.increase(1);
        let n3 = b.put(1, e3, Some(n1), &v0);
        assert_eq!(b.put(1, e3, Some(n2), &v1), n3);
        let all = b.extract(n3, &v1, false);
        assert_eq!(all.len(), 2);
        let first = b.extract(n3, &v1, true);
        assert_eq!(&first[..], &all[..1]);
        let ids: Vec<EventId> = first[0].iter().map(|(_, e)| e.id).collect();
        assert_eq!(ids, [e2.id, e3.id]);
        let mut in_order = Path::new();
        assert!(b.extract_first_in_order(n3, &v1, &mut in_order));
        assert_eq!(in_order, first[0]);
        // Only the edge of the older version is compatible with it.
        let older = b.extract(n3, &v0, true);
        let ids: Vec<EventId> = older[0].iter().map(|(_, e)| e.id).collect();
        assert_eq!(ids, [e1.id, e3.id]);
    }
}
