//! The events of one key waiting for the watermark.

use std::collections::VecDeque;
use std::sync::Arc;

/// A waiting event: its time and the event.
type Entry<E> = (i64, Arc<E>);

/// A key's events waiting for the watermark, by timestamp, ties in arrival order. The first
/// sits inline: with many keys most wait with one event or none, and then a key holds no
/// allocation for its queue (a `VecDeque` kept between events would hold one per key).
/// Events behind the first go to a deque, allocated the first time and kept.
pub(crate) struct Waiting<E> {
    /// The earliest; `None` only when nothing waits.
    head: Option<Entry<E>>,
    /// Boxed: one word in every key's slot instead of the deque's four, for the few keys that
    /// ever wait with two events.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Entry<E>>>>,
}

impl<E> Default for Waiting<E> {
    fn default() -> Self {
        Waiting {
            head: None,
            rest: None,
        }
    }
}

impl<E> Waiting<E> {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    /// The time of the earliest event.
    pub(crate) fn front_ts(&self) -> Option<i64> {
        self.head.as_ref().map(|h| h.0)
    }

    /// In the order they will be handled.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(i64, Arc<E>)> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut (i64, Arc<E>)> {
        self.head
            .iter_mut()
            .chain(self.rest.iter_mut().flat_map(|r| r.iter_mut()))
    }

    /// Adds an event: after those with the same or an earlier time.
    pub(crate) fn push(&mut self, ts: i64, event: Arc<E>) {
        let Some(head) = &self.head else {
            self.head = Some((ts, event));
            return;
        };
        let head_ts = head.0;
        let rest = self.rest.get_or_insert_with(Default::default);
        if ts < head_ts {
            let old = self.head.replace((ts, event)).expect("checked");
            rest.push_front(old);
        } else if rest.back().is_none_or(|b| b.0 <= ts) {
            rest.push_back((ts, event));
        } else {
            let at = rest.partition_point(|e| e.0 <= ts);
            rest.insert(at, (ts, event));
        }
    }

    /// Removes and returns the earliest event if its time is `ts`.
    pub(crate) fn pop_at(&mut self, ts: i64) -> Option<Arc<E>> {
        if self.head.as_ref()?.0 != ts {
            return None;
        }
        let next = self.rest.as_mut().and_then(|r| r.pop_front());
        std::mem::replace(&mut self.head, next).map(|h| h.1)
    }
}

impl<E> FromIterator<(i64, Arc<E>)> for Waiting<E> {
    fn from_iter<I: IntoIterator<Item = (i64, Arc<E>)>>(iter: I) -> Self {
        let mut w = Waiting::default();
        for (ts, e) in iter {
            w.push(ts, e);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a plain list kept in the same order (stable by time): pushes at random
        /// times (`Some`), and pops of what is ready at the earliest time (`None`), as the
        /// operator does.
        #[test]
        fn keeps_time_order_with_ties_in_arrival_order(
            ops in prop::collection::vec(prop::option::weighted(0.75, 0i64..5), 0..40),
        ) {
            let mut w: Waiting<u32> = Waiting::default();
            let mut model: Vec<(i64, u32)> = Vec::new();
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Some(ts) => {
                        w.push(ts, Arc::new(id as u32));
                        let at = model.partition_point(|m| m.0 <= ts);
                        model.insert(at, (ts, id as u32));
                    }
                    None => {
                        let Some(ts) = w.front_ts() else {
                            prop_assert!(model.is_empty());
                            continue;
                        };
                        let mut got = Vec::new();
                        while let Some(e) = w.pop_at(ts) {
                            got.push(*e);
                        }
                        let n = model.iter().take_while(|m| m.0 == ts).count();
                        let want: Vec<u32> = model.drain(..n).map(|m| m.1).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                let seen: Vec<(i64, u32)> = w.iter().map(|(t, e)| (*t, **e)).collect();
                prop_assert_eq!(&seen, &model);
                prop_assert_eq!(w.len(), model.len());
                prop_assert_eq!(w.is_empty(), model.is_empty());
            }
        }
    }
}
