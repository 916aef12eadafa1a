//! [`Few`]: none, one inline, or a vector, for per-key storage that is one item for most keys.

/// Items of which most owners have exactly one: that one inline (no allocation), more in a
/// vector (kept once allocated). An enum rather than a `SmallVec`, so that it takes no more
/// room than one item plus the tag the vector's capacity leaves room for, and leaves the enums
/// around it a niche (`operator::layout` checks the sizes this gives a key's slot).
#[derive(Debug)]
pub(crate) enum Few<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few::Many(Vec::new())
    }
}

impl<T> Few<T> {
    pub(crate) fn clear(&mut self) {
        match self {
            Few::One(_) => *self = Few::default(),
            Few::Many(v) => v.clear(),
        }
    }

    /// Appends `item`: inline when nothing is held and no vector was allocated yet.
    pub(crate) fn push(&mut self, item: T) {
        match self {
            Few::Many(v) if v.is_empty() && v.capacity() == 0 => *self = Few::One(item),
            Few::Many(v) => v.push(item),
            Few::One(_) => {
                let Few::One(first) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                *self = Few::Many(vec![first, item]);
            }
        }
    }

    /// Drops the first `n` items.
    pub(crate) fn drop_first(&mut self, n: usize) {
        match self {
            Few::One(_) if n > 0 => *self = Few::default(),
            Few::One(_) => {}
            Few::Many(v) => {
                v.drain(..n);
            }
        }
    }
}

impl<T> std::ops::Deref for Few<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Few::One(x) => std::slice::from_ref(x),
            Few::Many(v) => v,
        }
    }
}

impl<T> std::ops::DerefMut for Few<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Few::One(x) => std::slice::from_mut(x),
            Few::Many(v) => v,
        }
    }
}

/// Exactly one item is held inline.
impl<T> FromIterator<T> for Few<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut it = iter.into_iter();
        match (it.next(), it.next()) {
            (Some(one), None) => Few::One(one),
            (first, second) => Few::Many(first.into_iter().chain(second).chain(it).collect()),
        }
    }
}

impl<T> IntoIterator for Few<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        match self {
            Few::One(x) => vec![x].into_iter(),
            Few::Many(v) => v.into_iter(),
        }
    }
}
