//! Deterministic simulation of one partition replicated on three brokers, driving the pure
//! replication rules (`strom::broker::replication`) the way the cluster runtime will: followers
//! fetch from the leader over a lossy network, brokers crash and come back, a controller elects
//! leaders from the ISR (clean elections only) and commits ISR changes, and returning replicas
//! truncate where their log diverges (KIP-279) before catching up.
//!
//! Checked for every seed (printed on failure so a run replays):
//! - no record acknowledged with acks=all is missing from the leader's log, ever;
//! - after healing, every replica holds the same log up to the high watermark;
//! - the high watermark a leader reports never goes backwards; leader epochs only grow.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use strom::broker::replication::{end_offset_for_epoch, truncation_step, LeaderState, Truncation};

/// xorshift64*: small, deterministic, good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Default)]
struct Replica {
    /// (leader epoch, record id) per offset.
    log: Vec<(i32, u64)>,
    alive: bool,
    /// After a leader change a follower must find the divergence point before fetching.
    needs_truncation: bool,
    high_watermark: i64,
}

impl Replica {
    fn epochs(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        for (i, (e, _)) in self.log.iter().enumerate() {
            if out.last().is_none_or(|(last, _)| last != e) {
                out.push((*e, i as i64));
            }
        }
        out
    }
    fn end(&self) -> i64 {
        self.log.len() as i64
    }
}

struct Sim {
    rng: Rng,
    now: u64,
    replicas: Vec<Replica>,
    leader: Option<usize>,
    epoch: i32,
    isr: BTreeSet<i32>,
    state: Option<LeaderState>,
    acked: Vec<(i64, u64)>,
    next_id: u64,
    pending_acks: Vec<(i64, u64)>,
}

const LAG_MS: u64 = 50;

impl Sim {
    fn new(seed: u64) -> Self {
        let mut replicas = vec![Replica::default(); 3];
        for r in &mut replicas {
            r.alive = true;
        }
        let mut s = Sim {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            now: 0,
            replicas,
            leader: None,
            epoch: 0,
            isr: [1, 2, 3].into_iter().collect(),
            state: None,
            acked: Vec::new(),
            next_id: 0,
            pending_acks: Vec::new(),
        };
        s.elect();
        s
    }

    fn id(i: usize) -> i32 {
        i as i32 + 1
    }

    /// The controller: a new leader from the live ISR members (clean election), new epoch.
    fn elect(&mut self) {
        let live: Vec<usize> = (0..3)
            .filter(|i| self.replicas[*i].alive && self.isr.contains(&Self::id(*i)))
            .collect();
        let Some(&new) = live.get(self.rng.below(live.len().max(1) as u64) as usize) else {
            self.leader = None; // offline until an ISR member returns
            self.state = None;
            return;
        };
        self.epoch += 1;
        self.leader = Some(new);
        let r = &self.replicas[new];
        self.state = Some(LeaderState::new(
            Self::id(new),
            self.epoch,
            vec![1, 2, 3],
            self.isr.clone(),
            r.end(),
            r.high_watermark,
            self.now,
            LAG_MS,
        ));
        for (i, f) in self.replicas.iter_mut().enumerate() {
            if i != new {
                f.needs_truncation = true;
            }
        }
        // Acknowledgements still outstanding from the old leader are never sent.
        self.pending_acks.clear();
    }

    fn commit_isr(&mut self, proposal: BTreeSet<i32>) {
        // The controller refuses to drop the last member and accepts otherwise.
        if proposal.is_empty() {
            return;
        }
        self.isr = proposal;
        let st = self.state.as_mut().unwrap();
        st.isr_committed(self.isr.clone());
    }

    fn produce(&mut self) {
        let Some(l) = self.leader else { return };
        let st = self.state.as_mut().unwrap();
        if st.check_min_isr(2).is_err() {
            return; // NOT_ENOUGH_REPLICAS: nothing written, nothing acknowledged
        }
        self.next_id += 1;
        let r = &mut self.replicas[l];
        r.log.push((self.epoch, self.next_id));
        let end = r.end();
        self.pending_acks.push((end - 1, self.next_id));
        st.on_append(end);
    }

    fn follower_step(&mut self, i: usize) {
        let Some(l) = self.leader else { return };
        if i == l || !self.replicas[i].alive {
            return;
        }
        if self.rng.below(4) == 0 {
            return; // the fetch (or its answer) was lost
        }
        let leader_epochs = self.replicas[l].epochs();
        let leader_end = self.replicas[l].end();
        if self.replicas[i].needs_truncation {
            let mine = self.replicas[i].epochs();
            let mut asked = mine.last().map_or(-1, |(e, _)| *e);
            let to = loop {
                if asked < 0 {
                    break 0;
                }
                let answer = end_offset_for_epoch(&leader_epochs, leader_end, asked);
                match truncation_step(&mine, self.replicas[i].end(), asked, answer) {
                    Truncation::To(o) => break o,
                    Truncation::Ask(e) => asked = e,
                }
            };
            let f = &mut self.replicas[i];
            f.log.truncate(to.max(0) as usize);
            f.high_watermark = f.high_watermark.min(f.end());
            f.needs_truncation = false;
        }
        let fetch_offset = self.replicas[i].end();
        let st = self.state.as_mut().unwrap();
        let (_, proposal) = st.on_fetch(Self::id(i), fetch_offset, self.now);
        let hw = st.high_watermark();
        let take = 1 + self.rng.below(4) as usize;
        let from = fetch_offset as usize;
        let copy: Vec<(i32, u64)> = self.replicas[l]
            .log
            .iter()
            .skip(from)
            .take(take)
            .copied()
            .collect();
        let f = &mut self.replicas[i];
        f.log.extend(copy);
        f.high_watermark = hw.min(f.end()).max(f.high_watermark);
        if let Some(p) = proposal {
            if self.rng.below(3) != 0 {
                self.commit_isr(p);
            } else {
                let isr = self.isr.clone();
                self.commit_isr(isr); // refused: the controller reports the ISR it has
            }
        }
    }

    fn tick(&mut self) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        if let Some(p) = st.tick(self.now) {
            self.commit_isr(p);
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.replicas[i].alive {
            return;
        }
        self.replicas[i].alive = false;
        // The controller fences the broker: out of the ISR unless it is the last member.
        if self.isr.len() > 1 && self.isr.contains(&Self::id(i)) {
            self.isr.remove(&Self::id(i));
            if let Some(st) = self.state.as_mut() {
                if Some(i) != self.leader {
                    st.isr_committed(self.isr.clone());
                }
            }
        }
        if Some(i) == self.leader {
            self.elect();
        }
    }

    fn restart(&mut self, i: usize) {
        if self.replicas[i].alive {
            return;
        }
        let r = &mut self.replicas[i];
        r.alive = true;
        r.needs_truncation = true;
        if self.leader.is_none() {
            self.elect();
        }
    }

    fn check(&mut self, seed: u64, last_hw: &mut (i32, i64)) {
        let Some(l) = self.leader else { return };
        let st = self.state.as_ref().unwrap();
        let hw = st.high_watermark();
        if last_hw.0 == self.epoch {
            assert!(
                hw >= last_hw.1,
                "seed {seed}: high watermark went back {} -> {hw}",
                last_hw.1
            );
        } else {
            assert!(self.epoch > last_hw.0, "seed {seed}: epochs must grow");
        }
        *last_hw = (self.epoch, hw);
        // Newly acknowledged records: those under the high watermark.
        let (done, rest): (Vec<_>, Vec<_>) =
            self.pending_acks.iter().partition(|(o, _)| st.acked(o + 1));
        self.acked.extend(done);
        self.pending_acks = rest;
        let log = &self.replicas[l].log;
        for (offset, id) in &self.acked {
            assert_eq!(
                log.get(*offset as usize).map(|e| e.1),
                Some(*id),
                "seed {seed}: acknowledged record {id} at offset {offset} missing from leader {} (epoch {})",
                l + 1,
                self.epoch
            );
        }
    }
}

fn run(seed: u64) {
    let mut s = Sim::new(seed);
    let mut last_hw = (s.epoch, 0);
    for _ in 0..400 {
        s.now += 1 + s.rng.below(10);
        match s.rng.below(100) {
            0..=29 => s.produce(),
            30..=79 => {
                let i = s.rng.below(3) as usize;
                s.follower_step(i);
            }
            80..=89 => s.tick(),
            90..=94 => {
                let i = s.rng.below(3) as usize;
                s.crash(i);
            }
            _ => {
                let i = s.rng.below(3) as usize;
                s.restart(i);
            }
        }
        s.check(seed, &mut last_hw);
    }
    // Heal: everyone back, no loss, until the followers caught up.
    for i in 0..3 {
        s.restart(i);
    }
    for _ in 0..400 {
        s.now += 5;
        for i in 0..3 {
            s.follower_step(i);
        }
        s.tick();
        s.check(seed, &mut last_hw);
    }
    let l = s.leader.unwrap();
    let hw = s.state.as_ref().unwrap().high_watermark() as usize;
    for (i, r) in s.replicas.iter().enumerate() {
        assert!(
            r.log.len() >= hw,
            "seed {seed}: replica {} did not catch up",
            i + 1
        );
        assert_eq!(
            r.log[..hw],
            s.replicas[l].log[..hw],
            "seed {seed}: replica {} disagrees below the high watermark",
            i + 1
        );
    }
}

#[test]
fn three_replicas_under_loss_and_crashes_lose_no_acknowledged_record() {
    let seeds: u64 = std::env::var("STROM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 0..seeds {
        run(seed);
    }
}
