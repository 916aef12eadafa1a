//! JSON patterns.
