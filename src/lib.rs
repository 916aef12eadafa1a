//! Integration tests and demos of the CEP workspace live in `tests/` and `examples/`.
