//! Kafka's data-replication rules for one partition, as pure state machines (no IO, no clock:
//! callers pass `now_ms`), so the cluster runtime and a deterministic simulation drive the same
//! code.
//!
//! ```text
//!   leader:   followers fetch ──▶ on_fetch (log ends, caught-up times) ──▶ high watermark
//!             tick(now) ──▶ proposals to shrink the ISR; on_fetch ──▶ proposals to expand it
//!             a proposal is committed through the controller (AlterPartition) ──▶ isr_committed
//!   follower: after a leader change, end_offset_for_epoch (leader) / truncation_step
//!             (follower) find where the logs diverge (KIP-101 / KIP-279)
//! ```
//!
//! The high watermark is the smallest log end offset among the *maximal* ISR (the committed ISR
//! plus any replica being added), never moves backwards, and is what `acks=all` waits for and
//! consumers read up to. The ISR always contains the leader.

use std::collections::{BTreeMap, BTreeSet};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    log_end: i64,
    /// Last time the follower had everything the leader had at its previous fetch.
    caught_up_ms: u64,
    /// The leader's log end at the follower's previous fetch.
    leader_end_at_last_fetch: i64,
    /// When the previous fetch came.
    last_fetch_ms: u64,
}

/// The leader's view of a partition's replicas.
#[derive(Debug, Clone)]
pub struct LeaderState {
    leader: i32,
    leader_epoch: i32,
    /// First offset written in this leader epoch: a follower joins the ISR only once it has it.
    epoch_start: i64,
    replicas: Vec<i32>,
    isr: BTreeSet<i32>,
    /// An ISR change sent to the controller and not yet committed.
    pending: Option<BTreeSet<i32>>,
    followers: BTreeMap<i32, Follower>,
    log_end: i64,
    high_watermark: i64,
    lag_max_ms: u64,
}

/// Why a produce with `acks=all` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEnoughReplicas {
    /// In-sync replicas now.
    pub isr: usize,
    /// `min.insync.replicas`.
    pub required: usize,
}

impl LeaderState {
    /// The state of a replica that just became leader in `leader_epoch`, with its log end and
    /// high watermark, the partition's replicas and committed ISR.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        leader: i32,
        leader_epoch: i32,
        replicas: Vec<i32>,
        isr: BTreeSet<i32>,
        log_end: i64,
        high_watermark: i64,
        now_ms: u64,
        lag_max_ms: u64,
    ) -> Self {
        let mut isr = isr;
        isr.insert(leader);
        let followers = replicas
            .iter()
            .filter(|r| **r != leader)
            .map(|r| {
                // Replicas already in the ISR get a full lag period to show up.
                (
                    *r,
                    Follower {
                        log_end: -1,
                        caught_up_ms: now_ms,
                        leader_end_at_last_fetch: log_end,
                        last_fetch_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderState {
            leader,
            leader_epoch,
            epoch_start: log_end,
            replicas,
            isr,
            pending: None,
            followers,
            log_end,
            high_watermark: high_watermark.min(log_end),
            lag_max_ms,
        }
    }

    /// The committed ISR.
    pub fn isr(&self) -> &BTreeSet<i32> {
        &self.isr
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Whether an ISR change waits for the controller.
    pub fn change_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The committed ISR plus replicas being added: what the high watermark waits for.
    fn maximal_isr(&self) -> BTreeSet<i32> {
        let mut m = self.isr.clone();
        if let Some(p) = &self.pending {
            m.extend(p.iter().copied());
        }
        m
    }

    fn end_of(&self, replica: i32) -> i64 {
        if replica == self.leader {
            self.log_end
        } else {
            self.followers.get(&replica).map_or(-1, |f| f.log_end)
        }
    }

    /// Recomputes the high watermark; returns it when it moved.
    fn advance(&mut self) -> Option<i64> {
        let hw = self
            .maximal_isr()
            .iter()
            .map(|r| self.end_of(*r))
            .min()
            .unwrap_or(self.log_end);
        if hw > self.high_watermark {
            self.high_watermark = hw;
            Some(hw)
        } else {
            None
        }
    }

    /// The leader appended: its log now ends at `log_end`. Returns the new high watermark if it
    /// moved (it does when the leader is alone in the ISR).
    pub fn on_append(&mut self, log_end: i64) -> Option<i64> {
        self.log_end = self.log_end.max(log_end);
        self.advance()
    }

    /// A follower fetched from `fetch_offset` (so its log ends there). Returns the new high
    /// watermark if it moved, and an ISR to propose to the controller if the follower should
    /// join it.
    pub fn on_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        now_ms: u64,
    ) -> (Option<i64>, Option<BTreeSet<i32>>) {
        let log_end = self.log_end;
        let Some(f) = self.followers.get_mut(&follower) else {
            return (None, None); // not a replica of this partition
        };
        // A fetch offset past the leader's end is a broken follower: do not trust it.
        let fetch_offset = fetch_offset.min(log_end);
        if fetch_offset >= log_end {
            f.caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            // It has everything the leader had at the previous fetch: caught up as of then.
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end = fetch_offset;
        f.leader_end_at_last_fetch = log_end;
        f.last_fetch_ms = now_ms;
        let proposal = if !self.isr.contains(&follower)
            && self.pending.is_none()
            && fetch_offset >= self.high_watermark
            && fetch_offset >= self.epoch_start
        {
            let mut p = self.isr.clone();
            p.insert(follower);
            self.pending = Some(p.clone());
            Some(p)
        } else {
            None
        };
        (self.advance(), proposal)
    }

    /// Followers that have not caught up within `replica.lag.time.max.ms`: an ISR without them to
    /// propose to the controller (none while another change is pending).
    pub fn tick(&mut self, now_ms: u64) -> Option<BTreeSet<i32>> {
        if self.pending.is_some() {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .filter(|r| **r != self.leader)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_some_and(|f| now_ms.saturating_sub(f.caught_up_ms) > self.lag_max_ms)
            })
            .copied()
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let p: BTreeSet<i32> = self
            .isr
            .iter()
            .filter(|r| !lagging.contains(r))
            .copied()
            .collect();
        // A shrink takes effect for the high watermark only once committed: until then the
        // lagging replicas still count (the maximal ISR), so nothing acknowledged is lost if
        // the controller refuses.
        self.pending = Some(self.isr.union(&p).copied().collect());
        Some(p)
    }

    /// The controller committed `isr` (or refused the change: pass the ISR it reports). Returns
    /// the new high watermark if it moved.
    pub fn isr_committed(&mut self, isr: BTreeSet<i32>) -> Option<i64> {
        let mut isr: BTreeSet<i32> = isr
            .into_iter()
            .filter(|r| self.replicas.contains(r))
            .collect();
        isr.insert(self.leader);
        self.isr = isr;
        self.pending = None;
        self.advance()
    }

    /// `acks=all` with `min.insync.replicas`: refused when the committed ISR is too small.
    pub fn check_min_isr(&self, min_insync: usize) -> Result<(), NotEnoughReplicas> {
        if self.isr.len() < min_insync {
            Err(NotEnoughReplicas {
                isr: self.isr.len(),
                required: min_insync,
            })
        } else {
            Ok(())
        }
    }

    /// Whether a record ending before `offset` is acknowledged for `acks=all`.
    pub fn acked(&self, offset: i64) -> bool {
        self.high_watermark >= offset
    }
}

/// OffsetsForLeaderEpoch on the leader: for the largest epoch `<= requested` in `epochs`
/// (`(epoch, start offset)`, ascending), that epoch and the offset where it ended (the next
/// epoch's start, or the log end for the latest). `(-1, -1)` when the leader has no such epoch.
pub fn end_offset_for_epoch(epochs: &[(i32, i64)], log_end: i64, requested: i32) -> (i32, i64) {
    strom_log::end_offset_for_epoch(epochs, log_end, requested).unwrap_or((-1, -1))
}

/// The follower's next step after a leader change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate the log to this offset, then fetch from there.
    To(i64),
    /// Ask the leader again about this (older) epoch.
    Ask(i32),
}

/// The follower's side of KIP-279: `mine` is its epoch cache, `asked` the epoch it asked about and
/// `answer` the leader's `end_offset_for_epoch` for it.
pub fn truncation_step(
    mine: &[(i32, i64)],
    log_end: i64,
    asked: i32,
    answer: (i32, i64),
) -> Truncation {
    let (leader_epoch, leader_end) = answer;
    if leader_epoch < 0 {
        // The leader knows no epoch this old: keep nothing beyond what both must share.
        return Truncation::To(mine.first().map_or(0, |(_, s)| *s).min(log_end));
    }
    if leader_epoch == asked {
        // Same epoch on both sides: the logs agree up to the smaller end of that epoch.
        let my_end = end_offset_for_epoch(mine, log_end, asked).1;
        return Truncation::To(leader_end.min(my_end).min(log_end));
    }
    // The leader's largest epoch <= asked is older: does the follower have that epoch?
    match mine.iter().rposition(|(e, _)| *e <= leader_epoch) {
        Some(i) if mine[i].0 == leader_epoch => {
            let my_end = end_offset_for_epoch(mine, log_end, leader_epoch).1;
            Truncation::To(leader_end.min(my_end).min(log_end))
        }
        Some(i) => Truncation::Ask(mine[i].0),
        // Every epoch the follower has is newer than anything the leader knows at or below
        // the asked one: nothing from the follower's first epoch on is shared.
        None => Truncation::To(
            leader_end
                .min(mine.first().map_or(log_end, |(_, s)| *s))
                .min(log_end),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(v: &[i32]) -> BTreeSet<i32> {
        v.iter().copied().collect()
    }

    #[test]
    fn high_watermark_waits_for_the_slowest_in_sync_replica() {
        let mut l = LeaderState::new(1, 5, vec![1, 2, 3], set(&[1, 2, 3]), 0, 0, 0, 10_000);
        assert_eq!(l.on_append(10), None, "followers have nothing yet");
        assert_eq!(l.on_fetch(2, 10, 5), (None, None));
        assert_eq!(l.on_fetch(3, 7, 5), (Some(7), None));
        assert!(l.acked(7) && !l.acked(8));
        assert_eq!(l.on_fetch(3, 10, 6), (Some(10), None));
    }

    #[test]
    fn lagging_follower_is_dropped_then_rejoins() {
        let mut l = LeaderState::new(1, 5, vec![1, 2, 3], set(&[1, 2, 3]), 0, 0, 0, 100);
        l.on_append(10);
        l.on_fetch(2, 10, 50);
        assert_eq!(l.tick(90), None, "nobody lags yet");
        // Replica 3 never fetches: after the lag time it is proposed out.
        assert_eq!(l.tick(150), Some(set(&[1, 2])));
        assert_eq!(
            l.high_watermark(),
            0,
            "replica 3 still counts until the change commits"
        );
        assert_eq!(l.isr_committed(set(&[1, 2])), Some(10));
        assert_eq!(
            l.check_min_isr(3),
            Err(NotEnoughReplicas {
                isr: 2,
                required: 3
            })
        );
        // It catches up: it is proposed back in.
        assert_eq!(
            l.on_fetch(3, 4, 160),
            (None, None),
            "behind the high watermark"
        );
        assert_eq!(l.on_fetch(3, 10, 170), (None, Some(set(&[1, 2, 3]))));
        assert_eq!(l.isr_committed(set(&[1, 2, 3])), None);
        assert!(l.check_min_isr(3).is_ok());
    }

    #[test]
    fn epochs_find_where_logs_diverge() {
        // Leader: epoch 1 from 0, epoch 3 from 50; log end 80.
        let leader = [(1, 0), (3, 50)];
        assert_eq!(end_offset_for_epoch(&leader, 80, 1), (1, 50));
        assert_eq!(end_offset_for_epoch(&leader, 80, 2), (1, 50));
        assert_eq!(end_offset_for_epoch(&leader, 80, 3), (3, 80));
        assert_eq!(end_offset_for_epoch(&leader, 80, 0), (-1, -1));
        // Follower wrote epoch 2 from 40 (never committed): it must truncate to 40.
        let follower = [(1, 0), (2, 40)];
        let step = truncation_step(&follower, 60, 2, end_offset_for_epoch(&leader, 80, 2));
        assert_eq!(step, Truncation::To(40));
        // A follower that is merely behind keeps its log.
        let behind = [(1, 0), (3, 50)];
        assert_eq!(
            truncation_step(&behind, 60, 3, end_offset_for_epoch(&leader, 80, 3)),
            Truncation::To(60)
        );
        // A follower whose older epoch the leader lacks asks again.
        let odd = [(1, 0), (2, 10), (4, 20)];
        assert_eq!(truncation_step(&odd, 30, 4, (3, 80)), Truncation::Ask(2));
    }

    proptest! {
        /// Random fetches, appends, ticks and controller answers: the high watermark never goes
        /// backwards, never passes the log end of any replica in the maximal ISR, and the ISR
        /// always holds the leader and only replicas.
        #[test]
        fn invariants_hold_under_any_schedule(events in proptest::collection::vec((0u8..4, 1i32..4, 0i64..20, 0u64..50), 1..200)) {
            let mut l = LeaderState::new(1, 1, vec![1, 2, 3], set(&[1, 2, 3]), 0, 0, 0, 100);
            let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
            let mut now = 0u64;
            let mut last_hw = 0;
            // An ISR change waits at the controller until a later event answers it.
            let mut proposal: Option<BTreeSet<i32>> = None;
            for (kind, replica, delta, dt) in events {
                now += dt;
                match kind {
                    0 => { let e = l.log_end + delta; l.on_append(e); }
                    1 if replica != 1 => {
                        let cur = ends.get(&replica).copied().unwrap_or(0);
                        let off = (cur + delta).min(l.log_end);
                        ends.insert(replica, off);
                        if let (_, Some(p)) = l.on_fetch(replica, off, now) { proposal = Some(p); }
                    }
                    2 => { if let Some(p) = l.tick(now) { proposal = Some(p); } }
                    _ => {
                        if let Some(p) = proposal.take() {
                            // The controller accepts, or refuses and reports the ISR it has.
                            if delta % 3 == 0 { let isr = l.isr().clone(); l.isr_committed(isr); } else { l.isr_committed(p); }
                        }
                    }
                }
                prop_assert!(l.high_watermark() >= last_hw, "high watermark went backwards");
                last_hw = l.high_watermark();
                prop_assert!(l.isr().contains(&1));
                prop_assert!(l.isr().iter().all(|r| [1, 2, 3].contains(r)));
                for r in l.maximal_isr() {
                    prop_assert!(l.high_watermark() <= l.end_of(r).max(0) || l.high_watermark() == 0,
                        "hw {} beyond replica {r}'s end {}", l.high_watermark(), l.end_of(r));
                }
            }
        }
    }
}
