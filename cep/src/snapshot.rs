//! Snapshots of one key's state: what a checkpoint writes and a restore (or another process, after
//! a rebalance) reads back.
//!
//! A [`KeySnapshot`] is plain data (serde): the key's distinct events once each, the events
//! waiting for the watermark, and per pattern its partial matches, completed matches and shared
//! buffer, with events referred to by index. The caller chooses how an event is written (`T`): the
//! JSON engine writes the event's JSON value and rebuilds the rest on restore. Restoring a
//! snapshot gives back a state that behaves exactly like the one snapshotted: the partial
//! matches keep their order (Java's heap array order, which decides ties), versions, locks and
//! per-timestamp counters.
//!
//! Hash maps are written sorted, so that equal states give equal snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::dewey::Dewey;
use crate::linear::{ChainState, LinState, Partial};
use crate::looping::{Entry, LoopState, Pos};
use crate::nfa::{CState, GenState, Nfa, NfaState, Repr};
use crate::pattern::AfterMatchSkip;
use crate::pq::JavaPq;
use crate::shared_buffer::{EventId, NodeId, SharedBuffer};

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key snapshot: {0}")]
pub struct SnapshotError(pub String);

/// The state of one key: see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeySnapshot<T> {
    /// The key's distinct events, each once (the queue and the patterns refer to them by index).
    pub events: Vec<T>,
    /// Events waiting for the watermark: `(timestamp, index into events)`, in queue order.
    queue: Vec<(i64, u32)>,
    /// Per pattern, in the operator's order.
    patterns: Vec<NfaSnapshot>,
    /// The time of the key's latest event (absent in snapshots of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NfaSnapshot {
    partial: Vec<CStateSnapshot>,
    completed: Vec<CStateSnapshot>,
    /// `(event id, index into the key's events, lock count)`, sorted by id.
    buffered: Vec<(Eid, u32, i32)>,
    /// Per timestamp, the next arrival index.
    counters: Vec<(i64, u32)>,
    /// Sorted by node id.
    nodes: Vec<NodeSnapshot>,
    /// The state of a key on the linear matcher (the fields above are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    linear: Option<LinSnapshot>,
    /// The state of a key on the chain matcher (the fields above are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainSnapshot>,
    /// The state of a key on the loop matcher (the fields above are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    looped: Option<LoopSnapshot>,
}

/// A key's state on the loop matcher (`crate::looping`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LoopSnapshot {
    /// The partial matches in queue order: `(position, first event's timestamp, its arrival
    /// id, run, events of the run held after the first)`.
    partial: Vec<LoopEntry>,
    /// The completed matches waiting under a skip strategy, in queue order: the partial match
    /// that completed (as above), and its last event: `(index into the key's events, its id)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    completed: Vec<(LoopEntry, (u32, Eid))>,
    /// Per run, its events (indices into the key's events).
    runs: Vec<Vec<u32>>,
    /// Per run, its events' ids, under a skip strategy (which compares them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<Vec<Eid>>,
    /// Per timestamp, the next arrival id.
    counters: Vec<(i64, u32)>,
}

/// A key's state on the chain matcher (`crate::linear`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ChainSnapshot {
    /// Per partial match, oldest first, its events: `(arrival number, timestamp, index into the
    /// key's events)`.
    partials: Vec<Vec<(u64, i64, u32)>>,
    /// The next event's arrival number.
    seq: u64,
    /// Whether events start partial matches (false while the pattern drains).
    starting: bool,
}

/// A key's state on the linear matcher (`crate::linear`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LinSnapshot {
    /// The events held, oldest first: `(timestamp, index into the key's events)`.
    events: Vec<(i64, u32)>,
    /// Bit `k`: a partial match holds the last `k` events.
    alive: u64,
    /// Whether events start partial matches (false while the pattern drains).
    starting: bool,
}

/// A partial match on the loop matcher: `(position, first event's timestamp, its arrival id,
/// run, events of the run held after the first)`.
type LoopEntry = (u8, i64, u32, u32, u32);

/// An event id: `(timestamp, arrival index)`.
type Eid = (i64, u32);
/// A node id: `(timestamp, arrival index, page)`.
type Nid = (i64, u32, u16);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CStateSnapshot {
    state: u32,
    prev: Option<Nid>,
    version: Vec<i32>,
    start_ts: i64,
    prev_ts: i64,
    start_event: Option<Eid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NodeSnapshot {
    id: Nid,
    lock: i32,
    /// `(target, version, lock)`, in order.
    edges: Vec<(Option<Nid>, Vec<i32>, i32)>,
}

fn eid(e: EventId) -> Eid {
    (e.ts, e.id)
}

fn nid(n: NodeId) -> Nid {
    (n.event.ts, n.event.id, n.page)
}

fn from_eid(e: Eid) -> EventId {
    EventId { ts: e.0, id: e.1 }
}

/// Gives each distinct event (by identity) one index.
pub(crate) struct EventTable<'a, E, T> {
    index: HashMap<*const E, u32>,
    events: Vec<T>,
    write: &'a mut dyn FnMut(&E) -> T,
}

impl<'a, E, T> EventTable<'a, E, T> {
    pub(crate) fn new(write: &'a mut dyn FnMut(&E) -> T) -> Self {
        EventTable {
            index: HashMap::new(),
            events: Vec::new(),
            write,
        }
    }

    pub(crate) fn add(&mut self, e: &Arc<E>) -> u32 {
        let ptr = Arc::as_ptr(e);
        if let Some(&i) = self.index.get(&ptr) {
            return i;
        }
        let i = self.events.len() as u32;
        self.events.push((self.write)(e));
        self.index.insert(ptr, i);
        i
    }

    pub(crate) fn finish(
        self,
        queue: Vec<(i64, u32)>,
        patterns: Vec<NfaSnapshotOf>,
    ) -> KeySnapshot<T> {
        KeySnapshot {
            events: self.events,
            queue,
            patterns: patterns.into_iter().map(|p| p.0).collect(),
            last_seen: None,
        }
    }
}

/// One pattern's part of a key snapshot (opaque outside this module).
pub(crate) struct NfaSnapshotOf(NfaSnapshot);

fn cstate(c: &CState) -> CStateSnapshot {
    CStateSnapshot {
        state: c.state,
        prev: c.prev.map(nid),
        version: c.version.digits().to_vec(),
        start_ts: c.start_ts,
        prev_ts: c.prev_ts,
        start_event: c.start_event.map(eid),
    }
}

/// Snapshots one pattern's state of a key.
pub(crate) fn snapshot_state<E, T>(
    st: &NfaState<E>,
    table: &mut EventTable<'_, E, T>,
) -> NfaSnapshotOf {
    let empty = |linear, chain, looped| {
        NfaSnapshotOf(NfaSnapshot {
            partial: Vec::new(),
            completed: Vec::new(),
            buffered: Vec::new(),
            counters: Vec::new(),
            nodes: Vec::new(),
            linear,
            chain,
            looped,
        })
    };
    let st = match &st.repr {
        Repr::General(g) => g,
        Repr::Chain(c) => {
            let partials = c
                .partials
                .iter()
                .map(|p| {
                    p.events
                        .iter()
                        .map(|(seq, ts, e)| (*seq, *ts, table.add(e)))
                        .collect()
                })
                .collect();
            return empty(
                None,
                Some(ChainSnapshot {
                    partials,
                    seq: c.seq,
                    starting: c.starting,
                }),
                None,
            );
        }
        Repr::Linear(l) => {
            let (events, alive, starting) = l.parts();
            return empty(
                Some(LinSnapshot {
                    events: events.iter().map(|(ts, e)| (*ts, table.add(e))).collect(),
                    alive,
                    starting,
                }),
                None,
                None,
            );
        }
        Repr::Loop(l) => {
            let parts = l.parts();
            let entry = |e: &Entry| (e.pos as u8, e.ts, e.id, e.run, e.len);
            let runs = parts
                .runs
                .iter()
                .map(|(events, _)| events.iter().map(|e| table.add(e)).collect())
                .collect();
            let ids = if parts.runs.iter().all(|(_, ids)| ids.is_empty()) {
                Vec::new()
            } else {
                let ids = |(_, ids): &(_, &[EventId])| ids.iter().map(|i| eid(*i)).collect();
                parts.runs.iter().map(ids).collect()
            };
            let completed = parts
                .completed
                .iter()
                .map(|(e, last, id)| (entry(e), (table.add(last), eid(*id))))
                .collect();
            return empty(
                None,
                None,
                Some(LoopSnapshot {
                    partial: parts.entries.iter().map(entry).collect(),
                    completed,
                    runs,
                    ids,
                    counters: parts.counters.to_vec(),
                }),
            );
        }
    };
    let b = &st.buffer;
    // Events are added to the table in id order (not in the buffer's storage order, which
    // depends on history), so that equal states give equal snapshots.
    let mut held: Vec<_> = b.snapshot_events().collect();
    held.sort_unstable_by_key(|x| x.0);
    let buffered: Vec<(Eid, u32, i32)> = held
        .into_iter()
        .map(|(id, e, lock)| (eid(id), table.add(e), lock))
        .collect();
    let mut counters: Vec<(i64, u32)> = b.counters().to_vec();
    counters.sort_unstable();
    let mut nodes: Vec<NodeSnapshot> = b
        .snapshot_nodes()
        .map(|(id, lock, edges)| NodeSnapshot {
            id: nid(id),
            lock,
            edges: edges
                .iter()
                .map(|e| (e.target.map(nid), e.version.digits().to_vec(), e.lock))
                .collect(),
        })
        .collect();
    nodes.sort_unstable_by_key(|n| n.id);
    NfaSnapshotOf(NfaSnapshot {
        partial: st.partial.as_slice().iter().map(cstate).collect(),
        completed: st.completed.as_slice().iter().map(cstate).collect(),
        buffered,
        counters,
        nodes,
        linear: None,
        chain: None,
        looped: None,
    })
}

impl<T> KeySnapshot<T> {
    /// Number of patterns the snapshot holds state for.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// The queued events `(timestamp, index into events)`, checked against the event table.
    pub(crate) fn queue(&self) -> Result<&[(i64, u32)], SnapshotError> {
        for &(_, i) in &self.queue {
            if i as usize >= self.events.len() {
                return Err(SnapshotError(format!("queued event {i} does not exist")));
            }
        }
        Ok(&self.queue)
    }

    /// Rebuilds pattern `p`'s state for `nfa`, with the key's events `events` (as restored).
    pub(crate) fn restore_state<E>(
        &self,
        p: usize,
        nfa: &Nfa<E>,
        events: &[Arc<E>],
    ) -> Result<NfaState<E>, SnapshotError> {
        let s = &self.patterns[p];
        let err = |m: String| SnapshotError(format!("pattern {}: {m}", nfa.name()));
        let event = |i: u32| {
            events
                .get(i as usize)
                .cloned()
                .ok_or_else(|| err(format!("held event {i} does not exist")))
        };
        if let Some(lp) = &s.looped {
            if nfa.looped.is_none() {
                return Err(err(
                    "a state of the loop matcher, for another pattern".into()
                ));
            }
            let entry = |&(pos, ts, id, run, len): &LoopEntry| {
                let pos = Pos::from_u8(pos).ok_or_else(|| err(format!("position {pos}")))?;
                Ok::<_, SnapshotError>(Entry {
                    ts,
                    id,
                    pos,
                    run,
                    len,
                })
            };
            let entries = lp
                .partial
                .iter()
                .map(entry)
                .collect::<Result<Vec<_>, _>>()?;
            let mut completed = Vec::with_capacity(lp.completed.len());
            for (e, (i, id)) in &lp.completed {
                completed.push((entry(e)?, event(*i)?, from_eid(*id)));
            }
            if !lp.ids.is_empty() && lp.ids.len() != lp.runs.len() {
                return Err(err(format!(
                    "ids of {} runs, for {}",
                    lp.ids.len(),
                    lp.runs.len()
                )));
            }
            let mut runs = Vec::with_capacity(lp.runs.len());
            for (n, r) in lp.runs.iter().enumerate() {
                let events = r.iter().map(|&i| event(i)).collect::<Result<Vec<_>, _>>()?;
                let ids = lp
                    .ids
                    .get(n)
                    .map_or(Vec::new(), |ids| ids.iter().map(|&i| from_eid(i)).collect());
                runs.push((events, ids));
            }
            let with_ids = nfa.skip != AfterMatchSkip::NoSkip;
            let st = LoopState::from_parts(
                entries,
                completed,
                runs,
                lp.counters.clone(),
                nfa.window(),
                with_ids,
            )
            .map_err(err)?;
            return Ok(NfaState {
                repr: Repr::Loop(Box::new(st)),
            });
        }
        if let Some(chain) = &s.chain {
            let shape = nfa
                .linear
                .as_ref()
                .filter(|l| !l.all_strict())
                .ok_or_else(|| err("a state of the chain matcher, for another pattern".into()))?;
            let mut partials = Vec::with_capacity(chain.partials.len());
            for p in &chain.partials {
                let mut evs = SmallVec::new();
                for &(seq, ts, i) in p {
                    evs.push((seq, ts, event(i)?));
                }
                partials.push(Partial { events: evs });
            }
            let st =
                ChainState::from_parts(shape, partials, chain.seq, chain.starting).map_err(err)?;
            return Ok(NfaState {
                repr: Repr::Chain(Box::new(st)),
            });
        }
        if let Some(lin) = &s.linear {
            let shape = nfa
                .linear
                .as_ref()
                .filter(|l| l.all_strict())
                .ok_or_else(|| err("a state of the linear matcher, for another pattern".into()))?;
            let mut held = Vec::with_capacity(lin.events.len());
            for &(ts, i) in &lin.events {
                held.push((ts, event(i)?));
            }
            let st = LinState::from_parts(shape, held, lin.alive, lin.starting).map_err(err)?;
            return Ok(NfaState {
                repr: Repr::Linear(st),
            });
        }
        let version = |d: &[i32]| Dewey::from_digits(d).ok_or_else(|| err("empty version".into()));
        let check_page = |n: Nid| {
            if (n.2 as usize) < nfa.pages.len() {
                Ok((from_eid((n.0, n.1)), n.2))
            } else {
                Err(err(format!("stage {} does not exist", n.2)))
            }
        };
        let mut buffered = Vec::with_capacity(s.buffered.len());
        for &(id, i, lock) in &s.buffered {
            let e = events
                .get(i as usize)
                .ok_or_else(|| err(format!("buffered event {i} does not exist")))?;
            buffered.push((from_eid(id), e.clone(), lock));
        }
        let mut nodes = Vec::with_capacity(s.nodes.len());
        for n in &s.nodes {
            let mut edges = Vec::with_capacity(n.edges.len());
            // Every node and edge a buffer keeps is locked at least once (a count that reaches
            // 0 removes it at once); the matcher relies on it (`Nfa::compute_next_states`).
            let held = |lock: i32, what: &str| {
                if lock < 1 {
                    Err(err(format!("a buffer {what} with lock count {lock}")))
                } else {
                    Ok(())
                }
            };
            held(n.lock, "node")?;
            for (target, v, lock) in &n.edges {
                held(*lock, "edge")?;
                edges.push((target.map(check_page).transpose()?, version(v)?, *lock));
            }
            let (event, page) = check_page(n.id)?;
            nodes.push((event, page, n.lock, edges));
        }
        let buffer = SharedBuffer::restore(buffered, &s.counters, nodes);
        let cs = |c: &CStateSnapshot| -> Result<CState, SnapshotError> {
            if c.state as usize >= nfa.states.len() {
                return Err(err(format!("state {} does not exist", c.state)));
            }
            let prev: Option<NodeId> = match c.prev {
                Some(n) => {
                    let (event, page) = check_page(n)?;
                    Some(buffer.node_ref(event, page))
                }
                None => None,
            };
            Ok(CState {
                state: c.state,
                prev,
                version: version(&c.version)?,
                start_ts: c.start_ts,
                prev_ts: c.prev_ts,
                start_event: c.start_event.map(from_eid),
            })
        };
        let partial = JavaPq::from_vec(s.partial.iter().map(cs).collect::<Result<_, _>>()?);
        let completed = JavaPq::from_vec(s.completed.iter().map(cs).collect::<Result<_, _>>()?);
        let due = nfa.compute_due(&partial);
        Ok(NfaState {
            repr: Repr::General(Box::new(GenState {
                partial,
                completed,
                buffer,
                due,
            })),
        })
    }
}
