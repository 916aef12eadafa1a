//! Window assigners: which windows an element belongs to.

use std::sync::Arc;

use super::trigger::{CountTrigger, EventTimeTrigger, ProcessingTimeTrigger, Trigger};
use super::{GlobalWindow, TimeWindow, Window};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Assigns elements to windows (Flink's `WindowAssigner`). Assigners do not look at the element
/// itself, only at its timestamp (event time) or the current processing time.
pub trait WindowAssigner: Send + Sync + 'static {
    /// The window type.
    type W: Window;

    /// Appends the windows of an element with `timestamp`, arriving at processing time `now`.
    fn assign_windows(&self, timestamp: Timestamp, now: Timestamp, out: &mut Vec<Self::W>);

    /// Whether windows are in event time (late data, cleanup by watermark) or processing time.
    fn is_event_time(&self) -> bool;

    /// The trigger used unless the job sets one.
    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, Self::W>>;

    /// Whether windows merge (session windows).
    fn is_merging(&self) -> bool {
        false
    }

    /// Groups `windows` into merges: calls `merge(members, result)` for every group of two or more
    /// windows that merge into `result`.
    fn merge_windows(&self, _windows: &[Self::W], _merge: &mut dyn FnMut(Vec<Self::W>, Self::W)) {}
}

fn positive(what: &str, v: Timestamp) -> Result<Timestamp> {
    if v > 0 {
        Ok(v)
    } else {
        Err(Error::Config(format!("{what} must be positive, got {v}")))
    }
}

/// Fixed-size, non-overlapping windows (Flink's `Tumbling{Event,Processing}TimeWindows`).
#[derive(Clone, Copy, Debug)]
pub struct TumblingWindows {
    size: Timestamp,
    offset: Timestamp,
    event_time: bool,
}

impl TumblingWindows {
    /// Event-time windows of `size` milliseconds.
    pub fn event_time(size: Timestamp) -> Result<Self> {
        Ok(TumblingWindows {
            size: positive("tumbling window size", size)?,
            offset: 0,
            event_time: true,
        })
    }

    /// Processing-time windows of `size` milliseconds.
    pub fn processing_time(size: Timestamp) -> Result<Self> {
        Ok(TumblingWindows {
            event_time: false,
            ..Self::event_time(size)?
        })
    }

    /// Shifts window starts by `offset` (for example a time zone).
    pub fn with_offset(mut self, offset: Timestamp) -> Result<Self> {
        if offset.abs() >= self.size {
            return Err(Error::Config(format!(
                "window offset {offset} must be smaller than the size {}",
                self.size
            )));
        }
        self.offset = offset;
        Ok(self)
    }
}

impl WindowAssigner for TumblingWindows {
    type W = TimeWindow;

    fn assign_windows(&self, timestamp: Timestamp, now: Timestamp, out: &mut Vec<TimeWindow>) {
        let t = if self.event_time { timestamp } else { now };
        let start = TimeWindow::window_start_with_offset(t, self.offset, self.size);
        out.push(TimeWindow::new(start, start + self.size));
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, TimeWindow>> {
        if self.event_time {
            Arc::new(EventTimeTrigger)
        } else {
            Arc::new(ProcessingTimeTrigger)
        }
    }
}

/// Fixed-size windows that start every `slide` milliseconds, so an element is in `size / slide` of
/// them (Flink's `Sliding{Event,Processing}TimeWindows`).
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindows {
    size: Timestamp,
    slide: Timestamp,
    offset: Timestamp,
    event_time: bool,
}

impl SlidingWindows {
    /// Event-time windows of `size` milliseconds sliding by `slide`.
    pub fn event_time(size: Timestamp, slide: Timestamp) -> Result<Self> {
        Ok(SlidingWindows {
            size: positive("sliding window size", size)?,
            slide: positive("sliding window slide", slide)?,
            offset: 0,
            event_time: true,
        })
    }

    /// Processing-time windows of `size` milliseconds sliding by `slide`.
    pub fn processing_time(size: Timestamp, slide: Timestamp) -> Result<Self> {
        Ok(SlidingWindows {
            event_time: false,
            ..Self::event_time(size, slide)?
        })
    }

    /// Shifts window starts by `offset`.
    pub fn with_offset(mut self, offset: Timestamp) -> Result<Self> {
        if offset.abs() >= self.slide {
            return Err(Error::Config(format!(
                "window offset {offset} must be smaller than the slide {}",
                self.slide
            )));
        }
        self.offset = offset;
        Ok(self)
    }
}

impl WindowAssigner for SlidingWindows {
    type W = TimeWindow;

    fn assign_windows(&self, timestamp: Timestamp, now: Timestamp, out: &mut Vec<TimeWindow>) {
        let t = if self.event_time { timestamp } else { now };
        // Latest window first, as Flink lists them.
        let mut start = TimeWindow::window_start_with_offset(t, self.offset, self.slide);
        while start > t - self.size {
            out.push(TimeWindow::new(start, start + self.size));
            start -= self.slide;
        }
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, TimeWindow>> {
        if self.event_time {
            Arc::new(EventTimeTrigger)
        } else {
            Arc::new(ProcessingTimeTrigger)
        }
    }
}

/// Windows that close after `gap` milliseconds without elements of their key; an element opens
/// `[t, t + gap)` and overlapping (or touching) windows merge (Flink's `*SessionWindows.withGap`).
#[derive(Clone, Copy, Debug)]
pub struct SessionWindows {
    gap: Timestamp,
    event_time: bool,
}

impl SessionWindows {
    /// Event-time sessions with `gap`.
    pub fn event_time(gap: Timestamp) -> Result<Self> {
        Ok(SessionWindows {
            gap: positive("session gap", gap)?,
            event_time: true,
        })
    }

    /// Processing-time sessions with `gap`.
    pub fn processing_time(gap: Timestamp) -> Result<Self> {
        Ok(SessionWindows {
            gap: positive("session gap", gap)?,
            event_time: false,
        })
    }
}

impl WindowAssigner for SessionWindows {
    type W = TimeWindow;

    fn assign_windows(&self, timestamp: Timestamp, now: Timestamp, out: &mut Vec<TimeWindow>) {
        let t = if self.event_time { timestamp } else { now };
        out.push(TimeWindow::new(t, t + self.gap));
    }

    fn is_event_time(&self) -> bool {
        self.event_time
    }

    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, TimeWindow>> {
        if self.event_time {
            Arc::new(EventTimeTrigger)
        } else {
            Arc::new(ProcessingTimeTrigger)
        }
    }

    fn is_merging(&self) -> bool {
        true
    }

    fn merge_windows(
        &self,
        windows: &[TimeWindow],
        merge: &mut dyn FnMut(Vec<TimeWindow>, TimeWindow),
    ) {
        // Flink's TimeWindow.mergeWindows: sort by start, sweep, merge intersecting runs.
        let mut sorted = windows.to_vec();
        sorted.sort_by_key(|w| w.start);
        let mut current: Option<(TimeWindow, Vec<TimeWindow>)> = None;
        let mut groups = Vec::new();
        for w in sorted {
            match &mut current {
                Some((cover, members)) if cover.intersects(&w) => {
                    *cover = cover.cover(&w);
                    members.push(w);
                }
                _ => {
                    if let Some(done) = current.take() {
                        groups.push(done);
                    }
                    current = Some((w, vec![w]));
                }
            }
        }
        groups.extend(current);
        for (cover, members) in groups {
            if members.len() > 1 {
                merge(members, cover);
            }
        }
    }
}

/// One window holding everything, for count windows and custom triggers (Flink's `GlobalWindows`).
/// Its default trigger never fires.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalWindows;

impl WindowAssigner for GlobalWindows {
    type W = GlobalWindow;

    fn assign_windows(&self, _timestamp: Timestamp, _now: Timestamp, out: &mut Vec<GlobalWindow>) {
        out.push(GlobalWindow);
    }

    fn is_event_time(&self) -> bool {
        false
    }

    fn default_trigger<T: 'static>(&self) -> Arc<dyn Trigger<T, GlobalWindow>> {
        // Flink's NeverTrigger: a count trigger that can never be reached.
        Arc::new(CountTrigger::of(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign<A: WindowAssigner>(a: &A, ts: Timestamp) -> Vec<A::W> {
        let mut out = Vec::new();
        a.assign_windows(ts, 1_000_000, &mut out);
        out
    }

    #[test]
    fn tumbling_and_sliding_assignment() {
        let t = TumblingWindows::event_time(15_000).unwrap();
        assert_eq!(assign(&t, 14_999), vec![TimeWindow::new(0, 15_000)]);
        assert_eq!(assign(&t, 15_000), vec![TimeWindow::new(15_000, 30_000)]);
        let t = t.with_offset(1_000).unwrap();
        assert_eq!(assign(&t, 500), vec![TimeWindow::new(-14_000, 1_000)]);
        let s = SlidingWindows::event_time(15_000, 5_000).unwrap();
        assert_eq!(
            assign(&s, 12_000),
            vec![
                TimeWindow::new(10_000, 25_000),
                TimeWindow::new(5_000, 20_000),
                TimeWindow::new(0, 15_000)
            ]
        );
        let p = TumblingWindows::processing_time(10).unwrap();
        assert_eq!(assign(&p, 3), vec![TimeWindow::new(1_000_000, 1_000_010)]);
        assert!(TumblingWindows::event_time(0).is_err());
        assert!(SlidingWindows::event_time(10, 5)
            .unwrap()
            .with_offset(5)
            .is_err());
    }

    #[test]
    fn session_windows_merge_intersecting_runs() {
        let s = SessionWindows::event_time(10).unwrap();
        let ws = [
            TimeWindow::new(0, 10),
            TimeWindow::new(30, 40),
            TimeWindow::new(5, 15),
            TimeWindow::new(15, 25),
            TimeWindow::new(50, 60),
        ];
        let mut merges = Vec::new();
        s.merge_windows(&ws, &mut |members, cover| merges.push((members, cover)));
        assert_eq!(
            merges,
            vec![(
                vec![
                    TimeWindow::new(0, 10),
                    TimeWindow::new(5, 15),
                    TimeWindow::new(15, 25)
                ],
                TimeWindow::new(0, 25)
            )]
        );
    }
}
