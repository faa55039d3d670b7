//! Watermarks: how far a query's event time has certainly got.
//!
//! Each stream input's partitions are tracked apart. While some of an input's partitions
//! still have records to read (a query catching up reads one partition's backlog ahead of
//! another's), the input's event time is the smallest of those partitions' latest times, so
//! that the records still unread in a slower partition are not late when they come. Once every
//! partition is read to its end, it is the largest time seen in any of them: a partition that
//! gets no records does not hold the others back. The watermark is the smallest over the
//! inputs, less each one's delay, and it never goes back.

use std::collections::HashMap;

/// Event time per input partition, and the watermark it allows.
#[derive(Debug, Clone)]
pub struct Watermarks {
    /// Per input: the latest event time seen in each partition.
    seen: Vec<HashMap<i32, i64>>,
    /// Per input: its watermark delay in ms, `None` for a table (no event time).
    delay: Vec<Option<i64>>,
    current: i64,
}

impl Watermarks {
    /// Nothing seen yet; the watermark starts at `floor` (a restored one).
    pub fn new(delay: Vec<Option<i64>>, floor: i64) -> Watermarks {
        Watermarks {
            seen: vec![HashMap::new(); delay.len()],
            delay,
            current: floor,
        }
    }

    /// Input `input` read a record of `partition` with event time `t`.
    pub fn observe(&mut self, input: usize, partition: i32, t: i64) {
        if let Some(seen) = self.seen.get_mut(input) {
            let e = seen.entry(partition).or_insert(t);
            *e = (*e).max(t);
        }
    }

    /// The watermark so far.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Moves the watermark on, given each input's partitions that still have records to read.
    pub fn advance(&mut self, behind: &[Vec<i32>]) -> i64 {
        let mut w: Option<i64> = None;
        for (i, delay) in self.delay.iter().enumerate() {
            let Some(delay) = delay else { continue };
            let seen = &self.seen[i];
            let lagging = behind.get(i).map_or(&[][..], Vec::as_slice);
            let t = if lagging.is_empty() {
                match seen.values().max() {
                    Some(t) => *t,
                    // Nothing read and nothing to read: no say in the watermark.
                    None => continue,
                }
            } else {
                let mut t = i64::MAX;
                for p in lagging {
                    match seen.get(p) {
                        Some(s) => t = t.min(*s),
                        // Records to read whose times are unknown yet: hold.
                        None => return self.current,
                    }
                }
                t
            };
            let v = t.saturating_sub(*delay);
            w = Some(w.map_or(v, |w| w.min(v)));
        }
        if let Some(w) = w {
            self.current = self.current.max(w);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_time_once_every_partition_is_read() {
        let mut w = Watermarks::new(vec![Some(5)], i64::MIN);
        w.observe(0, 0, 100);
        w.observe(0, 1, 40);
        assert_eq!(w.advance(&[vec![]]), 95);
    }

    #[test]
    fn a_partition_with_records_to_read_holds_the_others_back() {
        let mut w = Watermarks::new(vec![Some(0)], i64::MIN);
        w.observe(0, 0, 100);
        w.observe(0, 1, 40);
        assert_eq!(w.advance(&[vec![1]]), 40);
        // Partition 1 unread so far: its times are unknown, the watermark stays.
        let mut w = Watermarks::new(vec![Some(0)], 7);
        w.observe(0, 0, 100);
        assert_eq!(w.advance(&[vec![0, 1]]), 7);
    }

    #[test]
    fn never_goes_back_and_tables_have_no_say() {
        let mut w = Watermarks::new(vec![Some(0), None], i64::MIN);
        w.observe(0, 0, 100);
        assert_eq!(w.advance(&[vec![], vec![]]), 100);
        w.observe(0, 1, 10);
        assert_eq!(w.advance(&[vec![1], vec![]]), 100);
        assert_eq!(w.current(), 100);
    }

    #[test]
    fn the_smallest_over_inputs_less_their_delays() {
        let mut w = Watermarks::new(vec![Some(10), Some(0)], i64::MIN);
        w.observe(0, 0, 100);
        assert_eq!(w.advance(&[vec![], vec![]]), 90);
        w.observe(1, 0, 50);
        w.observe(0, 0, 200);
        assert_eq!(w.advance(&[vec![], vec![]]), 90);
        w.observe(1, 0, 150);
        assert_eq!(w.advance(&[vec![], vec![]]), 150);
    }
}
