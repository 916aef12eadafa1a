//! A binary heap that behaves exactly like `java.util.PriorityQueue` (Java 17): the same sift
//! operations, the same array order for iteration, the same bulk removal followed by `heapify`.
//!
//! Flink CEP keeps partial and completed matches in such queues, and when two entries compare
//! equal (two partial matches started by the same event) the order in which they come out
//! decides, under an after-match skip strategy, which match is emitted and which is pruned. To
//! give the same results as Flink in those ties, the queue must reproduce Java's heap exactly.

use std::cmp::Ordering;

/// A priority queue ordered by `cmp`, least first.
#[derive(Clone, Debug)]
pub struct JavaPq<T> {
    es: Vec<T>,
}

impl<T> Default for JavaPq<T> {
    fn default() -> Self {
        JavaPq { es: Vec::new() }
    }
}

impl<T> JavaPq<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue holding the elements of `es`, which must already be in heap order (an empty
    /// vector, typically, whose capacity is reused).
    pub fn from_vec(es: Vec<T>) -> Self {
        JavaPq { es }
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.es.is_empty()
    }

    /// Elements in array (iteration) order.
    pub fn as_slice(&self) -> &[T] {
        &self.es
    }

    /// Takes all elements out, in array order.
    pub fn take_vec(&mut self) -> Vec<T> {
        std::mem::take(&mut self.es)
    }

    /// The least element.
    pub fn peek(&self) -> Option<&T> {
        self.es.first()
    }

    /// `offer`: append, then sift up.
    #[inline]
    pub fn add(&mut self, x: T, cmp: impl Fn(&T, &T) -> Ordering) {
        if self.es.capacity() == 0 {
            // Room for two (a start state and one partial match, the usual queue of a key),
            // not `Vec`'s first four; it doubles from there.
            self.es.reserve_exact(2);
        }
        self.es.push(x);
        let k = self.es.len() - 1;
        self.sift_up(k, &cmp);
    }

    #[inline]
    fn sift_up(&mut self, mut k: usize, cmp: &impl Fn(&T, &T) -> Ordering) {
        while k > 0 {
            let parent = (k - 1) >> 1;
            if cmp(&self.es[k], &self.es[parent]) != Ordering::Less {
                break;
            }
            self.es.swap(k, parent);
            k = parent;
        }
    }

    fn sift_down(&mut self, mut k: usize, n: usize, cmp: &impl Fn(&T, &T) -> Ordering) {
        let half = n >> 1;
        while k < half {
            let mut child = (k << 1) + 1;
            let right = child + 1;
            if right < n && cmp(&self.es[child], &self.es[right]) == Ordering::Greater {
                child = right;
            }
            if cmp(&self.es[k], &self.es[child]) != Ordering::Greater {
                break;
            }
            self.es.swap(k, child);
            k = child;
        }
    }

    /// Removes the least element: the last element moves to the root and sifts down.
    pub fn poll(&mut self, cmp: impl Fn(&T, &T) -> Ordering) -> Option<T> {
        if self.es.is_empty() {
            return None;
        }
        let last = self.es.len() - 1;
        self.es.swap(0, last);
        let result = self.es.pop();
        let n = self.es.len();
        if n > 0 {
            self.sift_down(0, n, &cmp);
        }
        result
    }

    /// `removeIf`/`removeAll`: drop matching elements keeping the order of the survivors, then
    /// `heapify`, as Java's `bulkRemove` does. Returns whether anything was removed.
    pub fn remove_if(
        &mut self,
        mut pred: impl FnMut(&T) -> bool,
        cmp: impl Fn(&T, &T) -> Ordering,
    ) -> bool {
        let before = self.es.len();
        self.es.retain(|e| !pred(e));
        if self.es.len() == before {
            return false;
        }
        let n = self.es.len();
        if n > 1 {
            let mut i = (n >> 1) as isize - 1;
            while i >= 0 {
                self.sift_down(i as usize, n, &cmp);
                i -= 1;
            }
        }
        true
    }
}

/// Makes room for one more element, growing 1, 2, 4, 8, ... instead of `Vec`'s first step of 4
/// (8 for bytes): most keys hold one or two partial matches and nodes, and a million keys each
/// with room for four pay for it (`cep bench --workload hold`).
#[inline]
pub(crate) fn reserve_small<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.capacity().max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_key(a: &(i32, char), b: &(i32, char)) -> Ordering {
        a.0.cmp(&b.0)
    }

    #[test]
    fn polls_in_order_and_ties_follow_java_heap() {
        let mut q = JavaPq::new();
        for (i, c) in [(3, 'a'), (1, 'b'), (2, 'c'), (1, 'd'), (1, 'e')] {
            q.add((i, c), by_key);
        }
        // Java: offer 3a,1b,2c,1d,1e gives array [1b,1d,2c,3a,1e].
        let arr: Vec<char> = q.as_slice().iter().map(|x| x.1).collect();
        assert_eq!(arr, vec!['b', 'd', 'c', 'a', 'e']);
        let mut out = Vec::new();
        while let Some(x) = q.poll(by_key) {
            out.push(x.1);
        }
        // poll 1b -> [1e,1d,2c,3a] ; poll 1e -> [1d,3a,2c] ; then 1d, 2c, 3a
        assert_eq!(out, vec!['b', 'e', 'd', 'c', 'a']);
    }

    #[test]
    fn remove_if_heapifies() {
        let mut q = JavaPq::new();
        for i in [5, 4, 3, 2, 1] {
            q.add((i, 'x'), by_key);
        }
        assert!(q.remove_if(|e| e.0 == 1, by_key));
        assert!(!q.remove_if(|e| e.0 == 9, by_key));
        let mut out = Vec::new();
        while let Some(x) = q.poll(by_key) {
            out.push(x.0);
        }
        assert_eq!(out, vec![2, 3, 4, 5]);
    }
}
