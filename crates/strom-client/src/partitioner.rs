//! Choosing a partition for a record.
//!
//! - Keyed records: Kafka's murmur2 hash of the key, made positive, modulo the partition count,
//!   exactly as the Java client's `BuiltInPartitioner` (and librdkafka's `murmur2_random`), so a
//!   key lands on the same partition whichever client wrote it.
//! - Unkeyed records: [`DefaultPartitioner`] sticks to one partition until the caller reports a
//!   full batch, then moves on (KIP-794's uniform sticky partitioning), which keeps batches large.
//! - [`RoundRobin`] spreads every record, keyed or not, across partitions in turn.
//! - Anything else implements [`Partitioner`].

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Kafka's 32-bit murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's clients choose for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as i64 % partitions.max(1) as i64) as i32
}

/// Picks a partition for each record.
pub trait Partitioner: Send + Sync {
    /// The partition (in `0..partitions`) for a record with this key.
    fn partition(&self, key: Option<&[u8]>, partitions: i32) -> i32;

    /// Told when the batch being filled for `partition` is full (sticky partitioners move on).
    fn batch_full(&self, _partition: i32, _partitions: i32) {}
}

/// Keys by murmur2; unkeyed records stick to one partition until its batch is full.
#[derive(Debug, Default)]
pub struct DefaultPartitioner {
    sticky: AtomicU32,
    turns: AtomicU32,
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, key: Option<&[u8]>, partitions: i32) -> i32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => (self.sticky.load(Ordering::Relaxed) % partitions.max(1) as u32) as i32,
        }
    }

    fn batch_full(&self, partition: i32, partitions: i32) {
        // Move on only if nobody else already did; step through partitions in a scrambled but
        // uniform order so concurrent producers do not all pick the same next one.
        let current = self.sticky.load(Ordering::Relaxed);
        if (current % partitions.max(1) as u32) as i32 != partition {
            return;
        }
        let turn = self.turns.fetch_add(1, Ordering::Relaxed);
        let next =
            (current + 1 + (turn.wrapping_mul(0x9e37_79b9) >> 28)) % partitions.max(1) as u32;
        let next = if next == current % partitions.max(1) as u32 && partitions > 1 {
            (next + 1) % partitions as u32
        } else {
            next
        };
        let _ = self
            .sticky
            .compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Every record to the next partition in turn, ignoring keys.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Partitioner for RoundRobin {
    fn partition(&self, _key: Option<&[u8]>, partitions: i32) -> i32 {
        (self.next.fetch_add(1, Ordering::Relaxed) % partitions.max(1) as usize) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn round_robin_cycles() {
        let r = RoundRobin::default();
        let got: Vec<i32> = (0..6).map(|_| r.partition(Some(b"same"), 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn sticky_moves_only_when_the_batch_is_full() {
        let p = DefaultPartitioner::default();
        let first = p.partition(None, 5);
        assert_eq!(p.partition(None, 5), first);
        p.batch_full((first + 1) % 5, 5); // another partition's batch: no move
        assert_eq!(p.partition(None, 5), first);
        p.batch_full(first, 5);
        let second = p.partition(None, 5);
        assert_ne!(second, first);
        // Over many batches every partition gets used.
        let mut seen = [0usize; 5];
        for _ in 0..500 {
            let cur = p.partition(None, 5);
            seen[cur as usize] += 1;
            p.batch_full(cur, 5);
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
        // Keys are unaffected by stickiness.
        assert_eq!(p.partition(Some(b"k"), 5), partition_for_key(b"k", 5));
    }

    proptest::proptest! {
        #[test]
        fn keyed_partitions_are_in_range(key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), n in 1i32..1000) {
            let p = partition_for_key(&key, n);
            proptest::prop_assert!((0..n).contains(&p));
        }
    }
}
