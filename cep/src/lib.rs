//! # cep: complex event processing with Apache Flink CEP's semantics
//!
//! A tour:
//! - [`Pattern`] is the DSL: `begin`, `next`, `followed_by`, `followed_by_any`, `not_next`,
//!   `not_followed_by`, conditions (`where_`, `or`, `until`, and iterative variants that see the
//!   partial match through a [`Context`]), quantifiers, groups, `within` and the after-match
//!   skip strategy. Misuse is collected and reported by [`Pattern::compile`].
//! - [`Pattern::compile`] builds an immutable [`Nfa`], state for state the automaton Flink's
//!   `NFACompiler` builds, shared by all keys (`Arc`).
//! - [`NfaState`] is the per-key state: partial matches, and a shared buffer that stores each
//!   event once and the partial matches as versioned edges between events.
//! - [`CepOperator`] runs patterns per key in event time (or processing time): events wait for
//!   the watermark, are handled in timestamp order, and partial matches time out when the
//!   watermark passes their window, with or without further events for their key.
//!
//! ```
//! use cep::{CepOperator, OutputKind, Pattern};
//! use std::{sync::Arc, time::Duration};
//!
//! let nfa = Pattern::<(&str, &str)>::begin("fail")
//!     .where_(|e| e.1 == "fail")
//!     .next("again")
//!     .where_(|e| e.1 == "fail")
//!     .within(Duration::from_secs(2))
//!     .compile("two-failures")
//!     .unwrap();
//! let mut op = CepOperator::new(vec![Arc::new(nfa)]);
//! let mut out = Vec::new();
//! for (ts, user) in [(1000, "u1"), (1500, "u1")] {
//!     op.process_element(user, (user, "fail"), ts, &mut out);
//! }
//! op.advance_watermark(i64::MAX, &mut out);
//! assert_eq!(out.iter().filter(|o| o.kind == OutputKind::Match).count(), 1);
//! ```
#![warn(missing_docs)]

mod compile;
pub mod dataflow;
mod dewey;
mod due;
mod few;
mod linear;
mod looping;
mod nfa;
mod operator;
mod pattern;
mod pq;
mod shared_buffer;
mod snapshot;
mod waiting;

pub use nfa::{
    Action, CondExpr, Context, Events, Kind, Nfa, NfaState, PartialMatch, State, Transition,
};
pub use operator::{
    CepOperator, Dropped, OperatorStats, Output, OutputKind, StateBounds, TimeMode,
};
pub use pattern::{AfterMatchSkip, Contiguity, Pattern, PatternError, PatternErrors, WithinType};
pub use shared_buffer::EventId;
pub use snapshot::{KeySnapshot, SnapshotError};
