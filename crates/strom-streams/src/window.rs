//! Windows on event time.
//!
//! Every window type takes its grace period explicitly: how long after a window ends records
//! for it are still accepted (measured in stream time, the largest timestamp the operator has
//! seen in its partition). A record later than that is dropped, counted in
//! [`TaskMetrics::late_dropped`](crate::TaskMetrics), and written to the late-records topic if
//! one was given.
//!
//! | type | windows a record at `t` belongs to |
//! | --- | --- |
//! | [`TimeWindows::tumbling`] | `[t - t % size, … + size)` |
//! | [`TimeWindows::hopping`] | every `[s, s + size)` with `s` a multiple of `advance` and `s <= t < s + size` |
//! | [`SlidingWindows`] | Kafka's sliding windows: `[r - d, r]` for every record `r` of the key, and `[r + 1, r + 1 + d]` when a later record falls in it; both ends inclusive |
//! | [`SessionWindows`] | one window per burst of activity: records of a key closer than `gap` merge into one session `[first, last]` |

use std::time::Duration;

use crate::error::SerdeError;
use crate::serde::Serde;

/// A window's bounds in ms. Time windows are `[start, end)`; sliding and session windows
/// include their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Start (ms, inclusive).
    pub start: i64,
    /// End (ms).
    pub end: i64,
}

/// A key in a window: the key of windowed aggregates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// The window.
    pub window: Window,
}

impl<K: std::fmt::Display> std::fmt::Display for Windowed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@[{}, {})",
            self.key, self.window.start, self.window.end
        )
    }
}

/// Encoded as the key's bytes followed by start and end (8 bytes each, big-endian).
impl<K: Serde> Serde for Windowed<K> {
    fn serialize(&self, out: &mut Vec<u8>) {
        self.key.serialize(out);
        out.extend_from_slice(&self.window.start.to_be_bytes());
        out.extend_from_slice(&self.window.end.to_be_bytes());
    }
    fn deserialize(bytes: &[u8]) -> Result<Self, SerdeError> {
        let Some(split) = bytes.len().checked_sub(16) else {
            return Err(SerdeError::new("Windowed", "shorter than 16 bytes"));
        };
        let (k, w) = bytes.split_at(split);
        let mut s = [0u8; 8];
        let mut e = [0u8; 8];
        s.copy_from_slice(&w[..8]);
        e.copy_from_slice(&w[8..]);
        Ok(Windowed {
            key: K::deserialize(k)?,
            window: Window {
                start: i64::from_be_bytes(s),
                end: i64::from_be_bytes(e),
            },
        })
    }
}

/// Durations are capped here (some 73 million years), so window arithmetic cannot overflow.
pub(crate) const MAX_MS: i64 = i64::MAX / 4;

/// Timestamps beyond this are skipped by windowed operators (counted in `skipped`): a window
/// around them could not be represented.
pub(crate) const MAX_TS: i64 = i64::MAX / 4;

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(MAX_MS).min(MAX_MS)
}

/// Tumbling or hopping windows of a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub(crate) size: i64,
    pub(crate) advance: i64,
    pub(crate) grace: i64,
}

impl TimeWindows {
    /// Back-to-back windows of `size`; records up to `grace` late are accepted.
    pub fn tumbling(size: Duration, grace: Duration) -> Self {
        TimeWindows {
            size: ms(size).max(1),
            advance: ms(size).max(1),
            grace: ms(grace),
        }
    }

    /// Overlapping windows of `size` starting every `advance` (at most `size`).
    pub fn hopping(size: Duration, advance: Duration, grace: Duration) -> Self {
        let size = ms(size).max(1);
        TimeWindows {
            size,
            advance: ms(advance).clamp(1, size),
            grace: ms(grace),
        }
    }

    /// The windows containing `ts`, earliest first (none for negative timestamps).
    pub fn windows_for(&self, ts: i64) -> impl Iterator<Item = Window> + '_ {
        let first = if !(0..=MAX_TS).contains(&ts) {
            i64::MAX
        } else {
            ((ts - self.size + self.advance).max(0) / self.advance) * self.advance
        };
        let size = self.size;
        (0..)
            .map(move |i: i64| first.saturating_add(i * self.advance))
            .take_while(move |&s| s <= ts)
            .map(move |start| Window {
                start,
                end: start + size,
            })
    }
}

/// Kafka's sliding windows: windows of `time_difference` (both ends inclusive) that move with
/// the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub(crate) diff: i64,
    pub(crate) grace: i64,
}

impl SlidingWindows {
    /// Windows spanning `time_difference`; records up to `grace` late are accepted.
    pub fn new(time_difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            diff: ms(time_difference),
            grace: ms(grace),
        }
    }
}

/// Session windows: activity separated by at least `gap` starts a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub(crate) gap: i64,
    pub(crate) grace: i64,
}

impl SessionWindows {
    /// Sessions that close after `gap` of inactivity; records up to `grace` late are accepted.
    pub fn new(gap: Duration, grace: Duration) -> Self {
        SessionWindows {
            gap: ms(gap),
            grace: ms(grace),
        }
    }
}

/// Which records of two streams join: those whose timestamps are at most `before` /
/// `after` apart (a right record at `tr` joins a left record at `tl` when
/// `tl - before <= tr <= tl + after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub(crate) before: i64,
    pub(crate) after: i64,
    pub(crate) grace: i64,
}

impl JoinWindows {
    /// Records at most `time_difference` apart (either way) join; `grace` as for windows.
    pub fn new(time_difference: Duration, grace: Duration) -> Self {
        JoinWindows {
            before: ms(time_difference),
            after: ms(time_difference),
            grace: ms(grace),
        }
    }

    /// How far a right record may precede a left one.
    pub fn before(mut self, d: Duration) -> Self {
        self.before = ms(d);
        self
    }

    /// How far a right record may follow a left one.
    pub fn after(mut self, d: Duration) -> Self {
        self.after = ms(d);
        self
    }
}

/// When a windowed aggregate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Every update of a window (Kafka's default).
    #[default]
    OnUpdate,
    /// Once, the final result, when the window closes (end + grace passed).
    OnWindowClose,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_contain_the_record() {
        let w = TimeWindows::hopping(
            Duration::from_millis(10),
            Duration::from_millis(5),
            Duration::ZERO,
        );
        let got: Vec<_> = w.windows_for(12).map(|w| (w.start, w.end)).collect();
        assert_eq!(got, vec![(5, 15), (10, 20)]);
        let got: Vec<_> = w.windows_for(3).map(|w| (w.start, w.end)).collect();
        assert_eq!(got, vec![(0, 10)]);
        let t = TimeWindows::tumbling(Duration::from_millis(10), Duration::ZERO);
        assert_eq!(
            t.windows_for(19).map(|w| w.start).collect::<Vec<_>>(),
            vec![10]
        );
        assert_eq!(t.windows_for(-1).count(), 0);
        let odd = TimeWindows::hopping(
            Duration::from_millis(10),
            Duration::from_millis(3),
            Duration::ZERO,
        );
        for ts in 0..100 {
            for win in odd.windows_for(ts) {
                assert!(win.start <= ts && ts < win.end && win.start % 3 == 0);
            }
            let n = (0..=ts).filter(|s| s % 3 == 0 && ts < s + 10).count();
            assert_eq!(odd.windows_for(ts).count(), n, "ts {ts}");
        }
    }

    #[test]
    fn windowed_round_trip() {
        let w = Windowed {
            key: "k".to_string(),
            window: Window { start: 5, end: 10 },
        };
        assert_eq!(
            Windowed::<String>::from_bytes(w.to_bytes().as_deref()).unwrap(),
            w
        );
        assert!(Windowed::<String>::deserialize(b"short").is_err());
    }
}
