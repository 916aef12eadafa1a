//! Streaming runtime.
