//! Windows with Flink's semantics: assigners (tumbling, sliding, session, global), triggers, window
//! contents (incremental reduce/aggregate, or full-window process functions), allowed lateness and a
//! late-data side output.
//!
//! Time windows are `[start, end)`: their max timestamp is `end - 1`, the default event-time trigger
//! fires once the watermark reaches `end - 1`, and a window's state is cleaned up when the watermark
//! reaches `end - 1 + allowed_lateness`. Count windows are global windows with a count trigger (and a
//! count evictor for sliding ones), exactly as Flink's `countWindow` builds them.

mod assigner;
mod operator;
mod trigger;

pub use assigner::{
    GlobalWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowAssigner,
};
pub use operator::{
    AggregateContents, ListContents, ProcessWindowFunction, ReduceContents, WindowContents,
    WindowKeyState, WindowOperator, WindowSpec,
};
pub use trigger::{
    CountTrigger, EventTimeTrigger, ProcessingTimeTrigger, PurgingTrigger, Trigger, TriggerContext,
    TriggerResult,
};

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::time::{Timestamp, MAX_WATERMARK};

/// A window: something with a largest timestamp, usable as a state namespace and a timer namespace.
pub trait Window:
    Clone + Ord + Hash + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The largest timestamp that still belongs to the window.
    fn max_timestamp(&self) -> Timestamp;
}

/// A time window `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First timestamp in the window.
    pub start: Timestamp,
    /// First timestamp after the window (exclusive).
    pub end: Timestamp,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        TimeWindow { start, end }
    }

    /// Whether the two windows overlap or touch (Flink's `TimeWindow.intersects`), the session merge
    /// condition.
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window containing both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// The start of the window of size `size` (aligned to `offset`) that contains `timestamp`
    /// (Flink's `TimeWindow.getWindowStartWithOffset`, correct for negative timestamps too).
    pub fn window_start_with_offset(
        timestamp: Timestamp,
        offset: Timestamp,
        size: Timestamp,
    ) -> Timestamp {
        let remainder = (timestamp - offset) % size;
        if remainder < 0 {
            timestamp - (remainder + size)
        } else {
            timestamp - remainder
        }
    }
}

impl Window for TimeWindow {
    fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }
}

/// The single window of [`GlobalWindows`]; it never ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GlobalWindow;

impl Window for GlobalWindow {
    fn max_timestamp(&self) -> Timestamp {
        MAX_WATERMARK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_start_matches_flink() {
        assert_eq!(TimeWindow::window_start_with_offset(14_999, 0, 15_000), 0);
        assert_eq!(
            TimeWindow::window_start_with_offset(15_000, 0, 15_000),
            15_000
        );
        assert_eq!(TimeWindow::window_start_with_offset(-1, 0, 15_000), -15_000);
        assert_eq!(TimeWindow::window_start_with_offset(7, 2, 5), 7);
        assert_eq!(TimeWindow::window_start_with_offset(6, 2, 5), 2);
        assert_eq!(TimeWindow::new(0, 10).max_timestamp(), 9);
        assert!(TimeWindow::new(0, 10).intersects(&TimeWindow::new(10, 20)));
        assert!(!TimeWindow::new(0, 10).intersects(&TimeWindow::new(11, 20)));
        assert_eq!(
            TimeWindow::new(0, 10).cover(&TimeWindow::new(5, 20)),
            TimeWindow::new(0, 20)
        );
    }
}
