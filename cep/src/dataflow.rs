//! The CEP operator on the runtime: [`CepOperator`] implements the runtime's [`Operator`]
//! interface, so that a pattern is one more keyed operator of a dataflow
//! (`source -> assign_timestamps_and_watermarks -> key_by -> operator(cep::operator(..))`),
//! behind a window operator or any other stage, on one worker or several.
//!
//! Records are `(key, event)` with the event's timestamp; each output is emitted with its own
//! timestamp (a match: the event that completed it; a timeout: when it timed out; a late
//! event: its timestamp). The end of input is the end of event time: pending matches and
//! timeouts are emitted.

use std::hash::Hash;
use std::sync::Arc;

use cep_runtime::dataflow::OperatorFactory;
use cep_runtime::{Dataflow, Operator, Output as Emit, Result, Timestamp};

use crate::nfa::Nfa;
use crate::operator::{CepOperator, Output};

impl<K, E> Operator<(K, E), Output<K, E>> for CepOperator<K, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn process_element(
        &mut self,
        timestamp: Timestamp,
        (key, event): (K, E),
        out: &mut Emit<'_, Output<K, E>>,
    ) -> Result<()> {
        let mut outputs = Vec::new();
        CepOperator::process_element(self, key, event, timestamp, &mut outputs);
        for o in outputs {
            out.collect(o.timestamp, o);
        }
        Ok(())
    }

    fn process_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Emit<'_, Output<K, E>>,
    ) -> Result<()> {
        let mut outputs = Vec::new();
        self.advance_watermark(watermark, &mut outputs);
        for o in outputs {
            out.collect(o.timestamp, o);
        }
        Ok(())
    }

    fn end_of_input(&mut self, out: &mut Emit<'_, Output<K, E>>) -> Result<()> {
        self.process_watermark(i64::MAX, out)
    }
}

/// A factory of CEP operators over `nfas` for [`KeyedStream::operator`]: one operator per
/// worker, the automata shared.
///
/// [`KeyedStream::operator`]: cep_runtime::KeyedStream::operator
pub fn operator<K, E>(nfas: Vec<Arc<Nfa<E>>>) -> OperatorFactory<K, E, Output<K, E>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    Arc::new(move |_: &Dataflow| {
        Box::new(CepOperator::new(nfas.clone())) as Box<dyn Operator<(K, E), Output<K, E>>>
    })
}
