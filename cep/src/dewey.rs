//! Dewey numbers: the versions that tell which branch of a partial match an edge of the shared
//! buffer belongs to (Flink's `DeweyNumber`).

/// Digits held without allocation; longer versions (long partial matches of looping stages) go
/// to the heap.
const INLINE: usize = 6;

/// A version `d1.d2...dn`. `v` is compatible with `w` iff `w` is a proper prefix of `v`, or both
/// have the same length, agree on all digits but the last, and `v`'s last digit is `>=` `w`'s.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dewey(Repr);

/// Short versions are plain data (copying one is a copy of 32 bytes). Digits past `len` are
/// always 0, so the derived equality compares versions.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Inline { len: u8, digits: [i32; INLINE] },
    Heap(Box<[i32]>),
}

impl Dewey {
    /// A one-digit version.
    pub fn new(start: i32) -> Dewey {
        let mut digits = [0; INLINE];
        digits[0] = start;
        Dewey(Repr::Inline { len: 1, digits })
    }

    /// A version with these digits (at least one).
    pub(crate) fn from_digits(d: &[i32]) -> Option<Dewey> {
        if d.is_empty() {
            return None;
        }
        if d.len() <= INLINE {
            let mut digits = [0; INLINE];
            digits[..d.len()].copy_from_slice(d);
            Some(Dewey(Repr::Inline {
                len: d.len() as u8,
                digits,
            }))
        } else {
            Some(Dewey(Repr::Heap(d.into())))
        }
    }

    pub(crate) fn digits(&self) -> &[i32] {
        match &self.0 {
            Repr::Inline { len, digits } => &digits[..*len as usize],
            Repr::Heap(d) => d,
        }
    }

    /// Whether this version may follow an edge labelled `other`.
    #[inline(always)]
    pub fn is_compatible_with(&self, other: &Dewey) -> bool {
        if let (Repr::Inline { len: la, digits: a }, Repr::Inline { len: lb, digits: b }) =
            (&self.0, &other.0)
        {
            // Fixed-size loops over the inline digits (those past the length are 0 in both).
            let (la, lb) = (*la as usize, *lb as usize);
            return if la > lb {
                (0..INLINE).all(|i| i >= lb || a[i] == b[i])
            } else if la == lb {
                let last = la - 1;
                (0..INLINE).all(|i| {
                    if i == last {
                        a[i] >= b[i]
                    } else {
                        a[i] == b[i]
                    }
                })
            } else {
                false
            };
        }
        self.is_compatible_with_slow(other)
    }

    #[cold]
    #[inline(never)]
    fn is_compatible_with_slow(&self, other: &Dewey) -> bool {
        let (a, b) = (self.digits(), other.digits());
        // Element-wise loops: the versions are short, and a `memcmp` call costs more.
        let same = |n: usize| a[..n].iter().zip(&b[..n]).all(|(x, y)| x == y);
        if a.len() > b.len() {
            same(b.len())
        } else if a.len() == b.len() {
            let last = a.len() - 1;
            same(last) && a[last] >= b[last]
        } else {
            false
        }
    }

    /// A copy whose last digit is increased by `times`.
    #[inline]
    pub fn increase(&self, times: i32) -> Dewey {
        let mut v = self.clone();
        match &mut v.0 {
            Repr::Inline { len, digits } => digits[*len as usize - 1] += times,
            Repr::Heap(d) => {
                let last = d.len() - 1;
                d[last] += times;
            }
        }
        v
    }

    /// A copy with a `0` appended.
    #[inline]
    pub fn add_stage(&self) -> Dewey {
        match &self.0 {
            Repr::Inline { len, digits } if (*len as usize) < INLINE => Dewey(Repr::Inline {
                len: len + 1,
                digits: *digits,
            }),
            _ => {
                let mut d = Vec::with_capacity(self.digits().len() + 1);
                d.extend_from_slice(self.digits());
                d.push(0);
                Dewey(Repr::Heap(d.into_boxed_slice()))
            }
        }
    }
}

impl std::fmt::Debug for Dewey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.digits().iter().map(|d| d.to_string()).collect();
        write!(f, "{}", parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility() {
        let a = Dewey::new(1);
        let b = a.add_stage(); // 1.0
        assert!(b.is_compatible_with(&a));
        assert!(!a.is_compatible_with(&b));
        let c = b.increase(2); // 1.2
        assert!(c.is_compatible_with(&b));
        assert!(!b.is_compatible_with(&c));
        assert!(!Dewey::new(2).add_stage().is_compatible_with(&a));
        assert_eq!(format!("{:?}", c.add_stage()), "1.2.0");
    }

    #[test]
    fn long_versions_spill_and_compare_like_short_ones() {
        let mut v = Dewey::new(1);
        for _ in 0..10 {
            let next = v.add_stage().increase(1);
            assert!(next.is_compatible_with(&v));
            assert!(!v.is_compatible_with(&next));
            assert!(next.increase(1).is_compatible_with(&next));
            assert!(!next.is_compatible_with(&next.increase(1)));
            v = next;
        }
        assert_eq!(format!("{v:?}"), "1.1.1.1.1.1.1.1.1.1.1");
        assert_eq!(v.clone(), v);
        assert_ne!(v.increase(1), v);
    }
}
