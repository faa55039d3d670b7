//! Property tests: windowed counts and stream-stream joins against straightforward batch
//! computations over the same (shuffled, never late) input.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use strom_streams::*;

/// Far enough that nothing in the generated input is ever late.
const GRACE: u64 = 100_000;
/// A timestamp after which every generated window or join buffer has closed.
const FLUSH_TS: i64 = 10_000_000;
const KEYS: [&str; 3] = ["a", "b", "c"];

type WinMap = BTreeMap<(String, i64, i64), i64>;

fn ms(n: i64) -> Duration {
    Duration::from_millis(n as u64)
}

fn records() -> impl Strategy<Value = Vec<(usize, i64)>> {
    prop::collection::vec((0..KEYS.len(), 0i64..200), 0..40)
}

/// Which windowed count to run.
#[derive(Debug, Clone, Copy)]
enum Spec {
    Time(TimeWindows),
    Sliding(SlidingWindows),
    Session(SessionWindows),
}

fn run(spec: Spec, emit: Emit, input: &[(usize, i64)]) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    let g = b.stream::<String, i64>("in").group_by_key();
    let t = match spec {
        Spec::Time(w) => g.windowed_by(w).emit(emit).materialize_as("store").count(),
        Spec::Sliding(w) => g
            .windowed_by_sliding(w)
            .emit(emit)
            .materialize_as("store")
            .count(),
        Spec::Session(w) => g
            .windowed_by_session(w)
            .emit(emit)
            .materialize_as("store")
            .count(),
    };
    t.to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    for &(k, ts) in input {
        d.pipe("in", KEYS[k].to_string(), 1i64, ts);
    }
    d
}

/// The last value emitted per window (tombstones remove it).
fn final_values(d: &mut TopologyTestDriver) -> WinMap {
    let mut m = BTreeMap::new();
    for r in d.read_output::<Windowed<String>, i64>("out").unwrap() {
        let k = (r.key.key, r.key.window.start, r.key.window.end);
        match r.value {
            Some(v) => {
                m.insert(k, v);
            }
            None => {
                m.remove(&k);
            }
        }
    }
    m
}

fn store(d: &TopologyTestDriver) -> WinMap {
    d.window_store::<String, i64>("store")
        .unwrap()
        .into_iter()
        .map(|(k, v)| ((k.key, k.window.start, k.window.end), v))
        .collect()
}

/// Checks the property for both emit strategies: on update, the last value per window and
/// the store equal `expected`; on window close, after a far-future record on another key,
/// every window was emitted exactly once, with its expected value.
fn check(spec: Spec, input: &[(usize, i64)], expected: &WinMap) -> Result<(), TestCaseError> {
    let mut d = run(spec, Emit::OnUpdate, input);
    prop_assert_eq!(&final_values(&mut d), expected);
    prop_assert_eq!(&store(&d), expected);
    prop_assert_eq!(d.metrics().late_dropped, 0);

    let mut d = run(spec, Emit::OnWindowClose, input);
    d.pipe("in", "flush".to_string(), 1i64, FLUSH_TS);
    let mut emitted: Vec<((String, i64, i64), i64)> = d
        .read_output::<Windowed<String>, i64>("out")
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                (r.key.key, r.key.window.start, r.key.window.end),
                r.value.unwrap(),
            )
        })
        .collect();
    emitted.sort();
    let want: Vec<_> = expected.iter().map(|(k, v)| (k.clone(), *v)).collect();
    prop_assert_eq!(emitted, want);
    prop_assert_eq!(d.metrics().late_dropped, 0);
    Ok(())
}

fn by_key(input: &[(usize, i64)]) -> BTreeMap<String, Vec<i64>> {
    let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for &(k, ts) in input {
        m.entry(KEYS[k].to_string()).or_default().push(ts);
    }
    for v in m.values_mut() {
        v.sort_unstable();
    }
    m
}

fn batch_time(input: &[(usize, i64)], size: i64, advance: i64) -> WinMap {
    let mut m = BTreeMap::new();
    for &(k, ts) in input {
        let mut start = 0;
        while start <= ts {
            if ts < start + size {
                *m.entry((KEYS[k].to_string(), start, start + size))
                    .or_default() += 1;
            }
            start += advance;
        }
    }
    m
}

fn batch_session(input: &[(usize, i64)], gap: i64) -> WinMap {
    let mut m = BTreeMap::new();
    for (k, ts) in by_key(input) {
        let mut sessions: Vec<(i64, i64, i64)> = Vec::new();
        for t in ts {
            match sessions.last_mut() {
                Some((_, end, n)) if t - *end <= gap => {
                    *end = t;
                    *n += 1;
                }
                _ => sessions.push((t, t, 1)),
            }
        }
        for (s, e, n) in sessions {
            m.insert((k.clone(), s, e), n);
        }
    }
    m
}

fn batch_sliding(input: &[(usize, i64)], d: i64) -> WinMap {
    let mut m = BTreeMap::new();
    for (k, ts) in by_key(input) {
        let mut windows = std::collections::BTreeSet::new();
        for &t in &ts {
            windows.insert((t - d, t));
            if ts.iter().any(|&u| t < u && u <= t + 1 + d) {
                windows.insert((t + 1, t + 1 + d));
            }
        }
        for (s, e) in windows {
            let n = ts.iter().filter(|&&t| s <= t && t <= e).count() as i64;
            m.insert((k.clone(), s, e), n);
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tumbling_count_matches_batch(input in records(), size in 1i64..30) {
        let spec = Spec::Time(TimeWindows::tumbling(ms(size), ms(GRACE as i64)));
        check(spec, &input, &batch_time(&input, size, size))?;
    }

    #[test]
    fn hopping_count_matches_batch(
        input in records(),
        (size, advance) in (1i64..30).prop_flat_map(|s| (Just(s), 1i64..=s)),
    ) {
        let spec = Spec::Time(TimeWindows::hopping(ms(size), ms(advance), ms(GRACE as i64)));
        check(spec, &input, &batch_time(&input, size, advance))?;
    }

    #[test]
    fn session_count_matches_batch(input in records(), gap in 0i64..25) {
        let spec = Spec::Session(SessionWindows::new(ms(gap), ms(GRACE as i64)));
        check(spec, &input, &batch_session(&input, gap))?;
    }

    #[test]
    fn sliding_count_matches_batch(input in records(), diff in 0i64..25) {
        let spec = Spec::Sliding(SlidingWindows::new(ms(diff), ms(GRACE as i64)));
        check(spec, &input, &batch_sliding(&input, diff))?;
    }

    #[test]
    fn stream_joins_match_nested_loop(
        input in prop::collection::vec((any::<bool>(), 0..KEYS.len(), 0i64..100), 0..30),
        before in 0i64..15,
        after in 0i64..15,
    ) {
        let w = JoinWindows::new(Duration::ZERO, ms(GRACE as i64))
            .before(ms(before))
            .after(ms(after));
        // Record i has value i; left records go to L, right ones to R.
        let left: Vec<(usize, i64, i64)> = input
            .iter()
            .enumerate()
            .filter(|(_, r)| r.0)
            .map(|(i, r)| (r.1, r.2, i as i64))
            .collect();
        let right: Vec<(usize, i64, i64)> = input
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.0)
            .map(|(i, r)| (r.1, r.2, i as i64))
            .collect();
        type Row = (String, Option<i64>, Option<i64>, i64);
        let mut inner: Vec<Row> = Vec::new();
        let mut l_partnered = vec![false; left.len()];
        let mut r_partnered = vec![false; right.len()];
        for (i, &(lk, lt, lv)) in left.iter().enumerate() {
            for (j, &(rk, rt, rv)) in right.iter().enumerate() {
                if lk == rk && lt - before <= rt && rt <= lt + after {
                    inner.push((KEYS[lk].to_string(), Some(lv), Some(rv), lt.max(rt)));
                    l_partnered[i] = true;
                    r_partnered[j] = true;
                }
            }
        }
        let l_alone: Vec<Row> = left
            .iter()
            .zip(&l_partnered)
            .filter(|(_, p)| !**p)
            .map(|(&(k, t, v), _)| (KEYS[k].to_string(), Some(v), None, t))
            .collect();
        let r_alone: Vec<Row> = right
            .iter()
            .zip(&r_partnered)
            .filter(|(_, p)| !**p)
            .map(|(&(k, t, v), _)| (KEYS[k].to_string(), None, Some(v), t))
            .collect();

        for kind in 0..3 {
            let b = StreamsBuilder::new();
            let ls = b.stream::<String, i64>("L");
            let rs = b.stream::<String, i64>("R");
            let joined = match kind {
                0 => ls.join(&rs, |a, b| Json((Some(*a), Some(*b))), w),
                1 => ls.left_join(&rs, |a, b| Json((Some(*a), b.copied())), w),
                _ => ls.outer_join(&rs, |a, b| Json((a.copied(), b.copied())), w),
            };
            joined.to("out");
            let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
            for (i, &(is_left, k, ts)) in input.iter().enumerate() {
                let topic = if is_left { "L" } else { "R" };
                d.pipe(topic, KEYS[k].to_string(), i as i64, ts);
            }
            // A far-future record on an unrelated key closes every window.
            d.pipe("L", "flush".to_string(), -1i64, FLUSH_TS);
            let mut got: Vec<Row> = d
                .read_output::<String, Json<(Option<i64>, Option<i64>)>>("out")
                .unwrap()
                .into_iter()
                .map(|r| {
                    let Json((a, b)) = r.value.unwrap();
                    (r.key, a, b, r.timestamp)
                })
                .collect();
            got.sort();
            let mut want = inner.clone();
            if kind >= 1 {
                want.extend(l_alone.iter().cloned());
            }
            if kind == 2 {
                want.extend(r_alone.iter().cloned());
            }
            want.sort();
            prop_assert_eq!(got, want, "join kind {}", kind);
            prop_assert_eq!(d.metrics().late_dropped, 0);
        }
    }
}
