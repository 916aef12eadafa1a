//! Dewey numbers: the versions that tell which branch of a partial match an edge of the shared
//! buffer belongs to (Flink's `DeweyNumber`).

use smallvec::SmallVec;

/// A version `d1.d2...dn`. `v` is compatible with `w` iff `w` is a proper prefix of `v`, or both
/// have the same length, agree on all digits but the last, and `v`'s last digit is `>=` `w`'s.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dewey(SmallVec<[i32; 6]>);

impl Dewey {
    /// A one-digit version.
    pub fn new(start: i32) -> Dewey {
        let mut v = SmallVec::new();
        v.push(start);
        Dewey(v)
    }

    /// Whether this version may follow an edge labelled `other`.
    pub fn is_compatible_with(&self, other: &Dewey) -> bool {
        let (a, b) = (&self.0, &other.0);
        if a.len() > b.len() {
            a[..b.len()] == b[..]
        } else if a.len() == b.len() {
            let last = a.len() - 1;
            a[..last] == b[..last] && a[last] >= b[last]
        } else {
            false
        }
    }

    /// A copy whose last digit is increased by `times`.
    pub fn increase(&self, times: i32) -> Dewey {
        let mut v = self.0.clone();
        let last = v.len() - 1;
        v[last] += times;
        Dewey(v)
    }

    /// A copy with a `0` appended.
    pub fn add_stage(&self) -> Dewey {
        let mut v = self.0.clone();
        v.push(0);
        Dewey(v)
    }
}

impl std::fmt::Debug for Dewey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
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
}
