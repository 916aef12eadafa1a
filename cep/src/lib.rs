//! CEP engine.
