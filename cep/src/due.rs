//! The operator's queue of due times: which key's slot to run next, and when.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Where a due time comes from; each source mostly pushes in ascending order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    Event,
    Timeout,
}

/// A min-queue of `(due, slot)`, popped in exactly the order of a binary heap of them. Event
/// times mostly ascend, and so do the timeouts they start: a push that is above the last one
/// of its source goes to that source's FIFO run. Any other (a key whose oldest partial match
/// times out before the newest key's) goes to a [`Wheel`] when it is due within its span of the
/// wheel's cursor, and to a heap when not; pops take the least of the four. So the common cases
/// cost a deque push and pop, or a bucket's, instead of two heap sifts.
#[derive(Default)]
pub(crate) struct DueQueue {
    events: VecDeque<(i64, u32)>,
    timeouts: VecDeque<(i64, u32)>,
    wheel: Wheel,
    heap: BinaryHeap<Reverse<(i64, u32)>>,
}

impl DueQueue {
    pub(crate) fn push(&mut self, e: (i64, u32), source: Source) {
        let run = match source {
            Source::Event => &mut self.events,
            Source::Timeout => &mut self.timeouts,
        };
        if run.back().is_none_or(|b| *b < e) {
            run.push_back(e);
        } else if !self.wheel.push(e) {
            self.heap.push(Reverse(e));
        }
    }

    /// Removes and returns the least entry if it is due at or before `until`.
    #[inline]
    pub(crate) fn pop_until(&mut self, until: i64) -> Option<(i64, u32)> {
        // An empty source reads as `NONE`, above every entry (no slot has index `u32::MAX`).
        const NONE: (i64, u32) = (i64::MAX, u32::MAX);
        let e = self.events.front().copied().unwrap_or(NONE);
        let t = self.timeouts.front().copied().unwrap_or(NONE);
        let h = self.heap.peek().map_or(NONE, |r| r.0);
        let w = self.wheel.least_until(until).unwrap_or(NONE);
        let least = e.min(t).min(h).min(w);
        if least.0 > until || least == NONE {
            return None;
        }
        // Equal entries are identical, so which source gives one up does not matter.
        if least == e {
            self.events.pop_front();
        } else if least == t {
            self.timeouts.pop_front();
        } else if least == w {
            self.wheel.pop_least();
        } else {
            self.heap.pop();
        }
        Some(least)
    }
}

/// Buckets of a wheel: 2^14, one per millisecond (16.4 s of due times; 64 KiB of bucket
/// heads, allocated on the first push).
const WHEEL_BITS: u32 = 14;
const SPAN: i64 = 1 << WHEEL_BITS;
/// No node: the end of a bucket's list.
const NIL: u32 = u32::MAX;

/// Due times within [`SPAN`] milliseconds of a cursor, a bucket per millisecond: a push links
/// a node into its bucket, and the least entry is in the first bucket from the cursor that
/// holds one (the cursor moves past empty buckets only up to the time asked about, so what
/// is pushed later, being due after that time, still lands ahead of it). A bucket holds the
/// slots due at one time, usually one; the least slot goes first.
#[derive(Default)]
struct Wheel {
    /// Per bucket, its first node (`NIL`: empty). Empty until the first push.
    heads: Vec<u32>,
    /// `(slot, next node)`; unused nodes are chained from `free`.
    nodes: Vec<(u32, u32)>,
    free: u32,
    /// Every entry is due in `[cursor, cursor + SPAN)`.
    cursor: i64,
    len: usize,
}

impl Wheel {
    fn bucket(due: i64) -> usize {
        (due & (SPAN - 1)) as usize
    }

    /// Adds `(due, slot)`; false (nothing added) when it is outside the wheel's span.
    fn push(&mut self, (due, slot): (i64, u32)) -> bool {
        if self.len == 0 {
            if self.heads.is_empty() {
                self.heads = vec![NIL; SPAN as usize];
                self.free = NIL;
            }
            self.cursor = due;
        }
        if due < self.cursor || due - self.cursor >= SPAN {
            return false;
        }
        let b = Self::bucket(due);
        let node = (slot, self.heads[b]);
        let n = if self.free == NIL {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let n = self.free;
            self.free = self.nodes[n as usize].1;
            self.nodes[n as usize] = node;
            n
        };
        self.heads[b] = n;
        self.len += 1;
        true
    }

    /// The least entry, if it is due at or before `until`.
    #[inline]
    fn least_until(&mut self, until: i64) -> Option<(i64, u32)> {
        if self.len == 0 {
            return None;
        }
        while self.cursor <= until {
            let mut n = self.heads[Self::bucket(self.cursor)];
            if n != NIL {
                let mut least = u32::MAX;
                while n != NIL {
                    let (slot, next) = self.nodes[n as usize];
                    least = least.min(slot);
                    n = next;
                }
                return Some((self.cursor, least));
            }
            self.cursor += 1;
        }
        None
    }

    /// Removes the entry [`least_until`](Self::least_until) gave.
    fn pop_least(&mut self) {
        let b = Self::bucket(self.cursor);
        let mut prev = NIL;
        let mut n = self.heads[b];
        let (mut at, mut at_prev, mut least) = (n, NIL, u32::MAX);
        while n != NIL {
            let (slot, next) = self.nodes[n as usize];
            if slot < least {
                (at, at_prev, least) = (n, prev, slot);
            }
            prev = n;
            n = next;
        }
        let next = self.nodes[at as usize].1;
        if at_prev == NIL {
            self.heads[b] = next;
        } else {
            self.nodes[at_prev as usize].1 = next;
        }
        self.nodes[at as usize].1 = self.free;
        self.free = at;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Push at the watermark plus this (0 or less: behind it), from a source.
        Push(i64, u32, bool),
        /// Advance the watermark by this much, then pop what is due.
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (
                prop_oneof![
                    4 => 1i64..40,
                    2 => 1i64..(3 * SPAN),
                    // At the edges of the span, from a cursor at or just past the watermark.
                    1 => (SPAN - 2)..(SPAN + 3),
                    1 => -20i64..=0,
                ],
                0u32..6,
                any::<bool>()
            )
                .prop_map(|(d, s, ev)| Op::Push(d, s, ev)),
            3 => prop_oneof![3 => 0i64..8, 1 => 0i64..(2 * SPAN), 1 => Just(i64::MAX / 4)]
                .prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The queue pops what a binary heap of the same entries pops, in the same order,
        /// whatever the mix of pushes ahead of, across and behind the wheel's span.
        #[test]
        fn pops_in_a_heaps_order(ops in prop::collection::vec(op(), 0..300)) {
            let mut q = DueQueue::default();
            let mut heap: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::new();
            let mut wm = 1_000i64;
            for op in ops {
                match op {
                    Op::Push(d, slot, ev) => {
                        let e = (wm.saturating_add(d), slot);
                        q.push(e, if ev { Source::Event } else { Source::Timeout });
                        heap.push(Reverse(e));
                    }
                    Op::Advance(by) => {
                        wm = wm.saturating_add(by);
                        loop {
                            let want = match heap.peek() {
                                Some(Reverse(e)) if e.0 <= wm => heap.pop().map(|r| r.0),
                                _ => None,
                            };
                            let got = q.pop_until(wm);
                            prop_assert_eq!(got, want);
                            if got.is_none() {
                                break;
                            }
                        }
                    }
                }
            }
            wm = i64::MAX;
            while let Some(Reverse(e)) = heap.pop() {
                prop_assert_eq!(q.pop_until(wm), Some(e));
            }
            prop_assert_eq!(q.pop_until(wm), None);
        }
    }
}
