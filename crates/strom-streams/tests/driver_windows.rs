//! Aggregations: plain, tumbling, hopping, sliding and session windows, with out-of-order and
//! late records, both emit strategies, window stores and changelogs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use strom_streams::*;

fn s(x: &str) -> String {
    x.to_string()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `(key, start, end, value, timestamp)` of every windowed record written to `topic`.
type WinOut = Vec<(String, i64, i64, Option<i64>, i64)>;

fn win_out(d: &mut TopologyTestDriver, topic: &str) -> WinOut {
    d.read_output::<Windowed<String>, i64>(topic)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.key.key,
                r.key.window.start,
                r.key.window.end,
                r.value,
                r.timestamp,
            )
        })
        .collect()
}

fn w(k: &str, start: i64, end: i64, v: i64, ts: i64) -> (String, i64, i64, Option<i64>, i64) {
    (s(k), start, end, Some(v), ts)
}

fn gone(k: &str, start: i64, end: i64, ts: i64) -> (String, i64, i64, Option<i64>, i64) {
    (s(k), start, end, None, ts)
}

/// `(key, start, end, value)` of a window store.
fn win_store(d: &TopologyTestDriver, store: &str) -> Vec<(String, i64, i64, i64)> {
    d.window_store::<String, i64>(store)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.key, k.window.start, k.window.end, v))
        .collect()
}

/// Decoded changelog records of `store` (windowed keys), sorted; the operator's stream-time
/// record (the empty key) is left out.
fn win_changes(
    changes: &[(String, bytes::Bytes, Option<bytes::Bytes>)],
    store: &str,
) -> Vec<(String, i64, i64, Option<i64>)> {
    let mut out: Vec<_> = changes
        .iter()
        .filter(|c| c.0 == store && !c.1.is_empty())
        .map(|(_, k, v)| {
            let k = Windowed::<String>::from_bytes(Some(k)).unwrap();
            let v = v.as_deref().map(|v| i64::from_bytes(Some(v)).unwrap());
            (k.key, k.window.start, k.window.end, v)
        })
        .collect();
    out.sort();
    out
}

fn pipe_all(d: &mut TopologyTestDriver, topic: &str, recs: &[(&str, i64, i64)]) {
    for &(k, v, ts) in recs {
        d.pipe(topic, s(k), v, ts);
    }
}

// ---------------------------------------------------------------------------------------------
// Non-windowed aggregations

#[test]
fn count_reduce_aggregate_per_key() {
    let b = StreamsBuilder::new();
    let st = b.stream::<String, i64>("in");
    st.group_by_key()
        .materialize_as("counts")
        .count()
        .to_stream()
        .to("count");
    st.group_by_key()
        .materialize_as("sums")
        .reduce(|a, v| *a += v)
        .to_stream()
        .to("sum");
    st.group_by_key()
        .materialize_as("joined")
        .aggregate(String::new, |k, v, acc: &mut String| {
            acc.push_str(&format!("{k}{v};"))
        })
        .to_stream()
        .to("agg");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 1, 5), ("b", 2, 3), ("a", 3, 1)]);
    let count: Vec<_> = d
        .read_output::<String, i64>("count")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap(), r.timestamp))
        .collect();
    assert_eq!(count, vec![(s("a"), 1, 5), (s("b"), 1, 3), (s("a"), 2, 1)]);
    let sum: Vec<_> = d
        .read_output::<String, i64>("sum")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap()))
        .collect();
    assert_eq!(sum, vec![(s("a"), 1), (s("b"), 2), (s("a"), 4)]);
    let agg: Vec<_> = d
        .read_output::<String, String>("agg")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.unwrap()))
        .collect();
    assert_eq!(
        agg,
        vec![
            (s("a"), s("a1;")),
            (s("b"), s("b2;")),
            (s("a"), s("a1;a3;"))
        ]
    );
    assert_eq!(
        d.kv_store::<String, i64>("counts").unwrap(),
        vec![(s("a"), 2), (s("b"), 1)]
    );
    assert_eq!(
        d.kv_store::<String, i64>("sums").unwrap(),
        vec![(s("a"), 4), (s("b"), 2)]
    );
    assert!(
        d.kv_store::<String, String>("counts").is_err(),
        "wrong type"
    );
    assert!(d.kv_store::<String, i64>("nope").is_err());
}

#[test]
fn kv_changelog_has_each_changed_key_once_per_drain() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .materialize_as("counts")
        .count();
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(
        &mut d,
        "in",
        &[("a", 0, 1), ("a", 0, 2), ("b", 0, 3), ("a", 0, 4)],
    );
    let mut ch: Vec<(String, String, Option<i64>)> = d
        .drain_changelogs()
        .into_iter()
        .map(|(st, k, v)| {
            (
                st,
                String::from_bytes(Some(&k)).unwrap(),
                v.map(|v| i64::from_bytes(Some(&v)).unwrap()),
            )
        })
        .collect();
    ch.sort();
    assert_eq!(
        ch,
        vec![
            (s("counts"), s("a"), Some(3)),
            (s("counts"), s("b"), Some(1))
        ]
    );
    assert!(d.drain_changelogs().is_empty());
    d.pipe("in", s("b"), 0i64, 5);
    let ch = d.drain_changelogs();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].0, "counts");
    assert_eq!(&ch[0].1[..], b"b");
    assert_eq!(ch[0].2.as_deref(), Some(&2i64.to_be_bytes()[..]));
}

#[test]
fn table_map_values_and_filter() {
    let b = StreamsBuilder::new();
    let counts = b.stream::<String, i64>("in").group_by_key().count();
    counts
        .map_values(|n| n * 100)
        .filter(|_, v| *v >= 200)
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 0, 1), ("a", 0, 2), ("b", 0, 3)]);
    let got: Vec<_> = d
        .read_output::<String, i64>("out")
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect();
    // Rows the filter rejects read as deleted.
    assert_eq!(
        got,
        vec![(s("a"), None), (s("a"), Some(200)), (s("b"), None)]
    );
}

// ---------------------------------------------------------------------------------------------
// Tumbling windows

fn tumbling_topology(emit: Emit) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(ms(10), ms(5)))
        .emit(emit)
        .late_records_to("late")
        .materialize_as("tw")
        .count()
        .to_stream()
        .to("out");
    TopologyTestDriver::new(b.build().unwrap()).unwrap()
}

const TUMBLING_INPUT: &[(&str, i64, i64)] = &[
    ("a", 10, 1),
    ("a", 20, 12),
    ("a", 30, 4),  // out of order, window [0,10) still open (stream time 12, close 7)
    ("a", 40, 16), // close 11: [0,10) closes
    ("a", 50, 9),  // late: [0,10) closed
    ("b", 60, 15),
    ("a", 70, 10), // [10,20) is open: accepted
];

#[test]
fn tumbling_on_update_with_out_of_order_and_late_records() {
    let mut d = tumbling_topology(Emit::OnUpdate);
    pipe_all(&mut d, "in", TUMBLING_INPUT);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 0, 10, 1, 1),
            w("a", 10, 20, 1, 12),
            w("a", 0, 10, 2, 4),
            w("a", 10, 20, 2, 16),
            w("b", 10, 20, 1, 15),
            w("a", 10, 20, 3, 10),
        ]
    );
    assert_eq!(d.metrics().late_dropped, 1);
    let late = d.read_output::<String, i64>("late").unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].key.as_str(), late[0].value, late[0].timestamp),
        ("a", Some(50), 9)
    );
    assert_eq!(
        win_store(&d, "tw"),
        vec![(s("a"), 10, 20, 3), (s("b"), 10, 20, 1)]
    );
}

#[test]
fn tumbling_on_window_close_emits_final_results_once() {
    let mut d = tumbling_topology(Emit::OnWindowClose);
    pipe_all(&mut d, "in", TUMBLING_INPUT);
    assert_eq!(win_out(&mut d, "out"), vec![w("a", 0, 10, 2, 9)]);
    // Exactly at end + grace the window [10,20) closes.
    d.pipe("in", s("x"), 0i64, 24);
    assert_eq!(win_out(&mut d, "out"), vec![]);
    d.pipe("in", s("x"), 0i64, 25);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 10, 20, 3, 19), w("b", 10, 20, 1, 19)]
    );
    assert_eq!(d.metrics().late_dropped, 1);
    assert_eq!(win_store(&d, "tw"), vec![(s("x"), 20, 30, 2)]);
}

#[test]
fn time_window_lateness_boundary() {
    // Grace 0: a record is late for [0,10) once stream time reaches 10.
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(ms(10), Duration::ZERO))
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 0, 9), ("a", 0, 10), ("a", 0, 9)]);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 0, 10, 1, 9), w("a", 10, 20, 1, 10)]
    );
    assert_eq!(d.metrics().late_dropped, 1);
    // Negative timestamps belong to no window: skipped, not late.
    d.pipe("in", s("a"), 0i64, -1);
    assert_eq!(d.metrics().late_dropped, 1);
    assert_eq!(d.metrics().skipped, 1);
    assert!(win_out(&mut d, "out").is_empty());
}

#[test]
fn windowed_reduce_and_aggregate() {
    let b = StreamsBuilder::new();
    let win = b
        .stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(ms(10), ms(100)));
    win.reduce(|a, v| *a = (*a).max(v)).to_stream().to("max");
    win.aggregate(|| 1000i64, |_, v, a| *a -= v)
        .to_stream()
        .to("agg");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(
        &mut d,
        "in",
        &[("a", 5, 1), ("a", 3, 2), ("a", 9, 11), ("a", 7, 3)],
    );
    assert_eq!(
        win_out(&mut d, "max"),
        vec![
            w("a", 0, 10, 5, 1),
            w("a", 0, 10, 5, 2),
            w("a", 10, 20, 9, 11),
            w("a", 0, 10, 7, 3)
        ]
    );
    assert_eq!(
        win_out(&mut d, "agg"),
        vec![
            w("a", 0, 10, 995, 1),
            w("a", 0, 10, 992, 2),
            w("a", 10, 20, 991, 11),
            w("a", 0, 10, 985, 3)
        ]
    );
}

#[test]
fn time_window_changelog_tombstones_closed_windows() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(ms(10), ms(5)))
        .materialize_as("cl")
        .count();
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 0, 1), ("a", 0, 4), ("b", 0, 2)]);
    let ch = d.drain_changelogs();
    assert_eq!(
        win_changes(&ch, "cl"),
        vec![(s("a"), 0, 10, Some(2)), (s("b"), 0, 10, Some(1))]
    );
    assert!(d.drain_changelogs().is_empty());
    // Stream time 16 closes [0,10) (10 + 5 <= 16).
    d.pipe("in", s("a"), 0i64, 16);
    let ch = d.drain_changelogs();
    assert_eq!(ch.len(), 4);
    // The operator's stream time is logged too (under the empty key), so it survives a restore.
    let time: Vec<_> = ch.iter().filter(|c| c.1.is_empty()).collect();
    assert_eq!(time.len(), 1);
    assert_eq!(time[0].2.as_deref(), Some(&16i64.to_be_bytes()[..]));
    assert_eq!(
        win_changes(&ch, "cl"),
        vec![
            (s("a"), 0, 10, None),
            (s("a"), 10, 20, Some(1)),
            (s("b"), 0, 10, None)
        ]
    );
    assert_eq!(win_store(&d, "cl"), vec![(s("a"), 10, 20, 1)]);
}

// ---------------------------------------------------------------------------------------------
// Hopping windows

#[test]
fn hopping_on_update_with_partially_late_record() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::hopping(ms(10), ms(5), Duration::ZERO))
        .materialize_as("hw")
        .late_records_to("late")
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(
        &mut d,
        "in",
        &[
            ("a", 0, 3),
            ("a", 0, 7),
            ("a", 0, 12), // closes [0,10)
            ("a", 0, 9),  // [0,10) closed, [5,15) open: counted there, not late
            ("a", 0, 4),  // only in [0,10): late
        ],
    );
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 0, 10, 1, 3),
            w("a", 0, 10, 2, 7),
            w("a", 5, 15, 1, 7),
            w("a", 5, 15, 2, 12),
            w("a", 10, 20, 1, 12),
            w("a", 5, 15, 3, 9),
        ]
    );
    assert_eq!(d.metrics().late_dropped, 1);
    assert_eq!(d.read_output_raw("late").len(), 1);
    assert_eq!(
        win_store(&d, "hw"),
        vec![(s("a"), 5, 15, 3), (s("a"), 10, 20, 1)]
    );
}

#[test]
fn hopping_on_window_close() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::hopping(ms(10), ms(5), Duration::ZERO))
        .emit(Emit::OnWindowClose)
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 0, 3), ("a", 0, 7), ("a", 0, 12)]);
    assert_eq!(win_out(&mut d, "out"), vec![w("a", 0, 10, 2, 9)]);
    d.pipe("in", s("x"), 0i64, 100);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 5, 15, 2, 14), w("a", 10, 20, 1, 19)]
    );
}

// ---------------------------------------------------------------------------------------------
// Sliding windows

#[test]
fn sliding_on_update_out_of_order_and_late() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_sliding(SlidingWindows::new(ms(10), ms(5)))
        .materialize_as("sw")
        .late_records_to("late")
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    pipe_all(&mut d, "in", &[("a", 0, 10), ("a", 0, 15), ("a", 0, 30)]);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 0, 10, 1, 10),
            w("a", 5, 15, 2, 15),
            w("a", 11, 21, 1, 15),
            w("a", 20, 30, 1, 30),
        ]
    );
    // Stream time 30, close 25: every window containing 12 ends by 22.
    d.pipe("in", s("a"), 0i64, 12);
    assert_eq!(d.metrics().late_dropped, 1);
    assert!(win_out(&mut d, "out").is_empty());
    // 22 is in [20,30] and in 15's right window [16,26] (new); its own left window [12,22]
    // has closed; its right window [23,33] holds 30. Results carry the largest timestamp of
    // their window.
    d.pipe("in", s("a"), 0i64, 22);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 16, 26, 1, 22),
            w("a", 20, 30, 2, 30),
            w("a", 23, 33, 1, 30),
        ]
    );
    d.pipe("in", s("a"), 0i64, 3);
    d.pipe("in", s("a"), 0i64, 14);
    assert_eq!(d.metrics().late_dropped, 3);
    let late: Vec<i64> = d
        .read_output::<String, i64>("late")
        .unwrap()
        .iter()
        .map(|r| r.timestamp)
        .collect();
    assert_eq!(late, vec![12, 3, 14]);
    assert_eq!(
        win_store(&d, "sw"),
        vec![
            (s("a"), 16, 26, 1),
            (s("a"), 20, 30, 2),
            (s("a"), 23, 33, 1)
        ]
    );
}

#[test]
fn sliding_windows_include_both_ends_and_do_not_repeat_unchanged_windows() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_sliding(SlidingWindows::new(ms(10), ms(100)))
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("in", s("a"), 0i64, 105);
    d.pipe("in", s("a"), 0i64, 108);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 95, 105, 1, 105),
            w("a", 98, 108, 2, 108),
            w("a", 106, 116, 1, 108)
        ]
    );
    d.pipe("in", s("a"), 0i64, 106);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 96, 106, 2, 106),
            w("a", 98, 108, 3, 108),
            w("a", 106, 116, 2, 108),
            w("a", 107, 117, 1, 108),
        ]
    );
    // A second record at 106: its right window [107,117] exists and does not change.
    d.pipe("in", s("a"), 0i64, 106);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 96, 106, 3, 106),
            w("a", 98, 108, 4, 108),
            w("a", 106, 116, 3, 108),
        ]
    );
    // 118 is exactly d after 108: its left window [108,118] holds both (ends are inclusive);
    // 108's right window [109,119] is created, holding only 118.
    d.pipe("in", s("a"), 0i64, 118);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 108, 118, 2, 118), w("a", 109, 119, 1, 118)]
    );
}

fn sliding_grace_zero(emit: Emit) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_sliding(SlidingWindows::new(ms(5), Duration::ZERO))
        .emit(emit)
        .aggregate(|| 0i64, |_, v, a| *a += v)
        .to_stream()
        .to("out");
    TopologyTestDriver::new(b.build().unwrap()).unwrap()
}

#[test]
fn sliding_with_zero_grace_keeps_in_order_left_windows() {
    let mut d = sliding_grace_zero(Emit::OnUpdate);
    pipe_all(&mut d, "in", &[("a", 1, 10), ("a", 2, 12), ("a", 4, 20)]);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 5, 10, 1, 10),
            w("a", 7, 12, 3, 12),
            w("a", 11, 16, 2, 12),
            w("a", 15, 20, 4, 20),
        ]
    );
    assert_eq!(d.metrics().late_dropped, 0);
    // 14 is only in [9,14] (closed: 14 < 20) and 12's right window [13,18] (closed too).
    d.pipe("in", s("a"), 8i64, 14);
    assert_eq!(d.metrics().late_dropped, 1);
    // 15 is in 20's left window [15,20], still open at stream time 20.
    d.pipe("in", s("a"), 16i64, 15);
    assert_eq!(d.metrics().late_dropped, 1);
    // It also creates its right window [16,21], holding 20.
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 15, 20, 20, 20), w("a", 16, 21, 4, 20)]
    );
}

#[test]
fn sliding_on_window_close() {
    let mut d = sliding_grace_zero(Emit::OnWindowClose);
    pipe_all(&mut d, "in", &[("a", 1, 10), ("a", 2, 12)]);
    assert_eq!(win_out(&mut d, "out"), vec![w("a", 5, 10, 1, 10)]);
    d.pipe("in", s("a"), 4i64, 20);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![w("a", 7, 12, 3, 12), w("a", 11, 16, 2, 16)]
    );
    d.pipe("in", s("b"), 0i64, 40);
    assert_eq!(win_out(&mut d, "out"), vec![w("a", 15, 20, 4, 20)]);
}

// ---------------------------------------------------------------------------------------------
// Session windows

const SESSION_INPUT: &[(&str, i64, i64)] = &[
    ("a", 0, 0),
    ("a", 0, 20),
    ("a", 0, 10), // bridges [0,0] and [20,20]
    ("a", 0, 15), // inside [0,20]
    ("a", 0, 35),
    ("a", 0, 28), // bridges [0,20] and [35,35]
    ("b", 0, 70), // close 70 - 10 - 20 = 40: [0,35] closes
    ("a", 0, 5),  // late
    ("a", 0, 39), // would join [0,35], but that closed and [39,39] ends before 40: late
    ("a", 0, 45),
];

fn session_topology(emit: Emit) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_session(SessionWindows::new(ms(10), ms(20)))
        .emit(emit)
        .late_records_to("late")
        .materialize_as("sess")
        .count()
        .to("out");
    TopologyTestDriver::new(b.build().unwrap()).unwrap()
}

#[test]
fn session_on_update_merges_with_tombstones() {
    let mut d = session_topology(Emit::OnUpdate);
    pipe_all(&mut d, "in", SESSION_INPUT);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 0, 0, 1, 0),
            w("a", 20, 20, 1, 20),
            gone("a", 0, 0, 10),
            gone("a", 20, 20, 10),
            w("a", 0, 20, 3, 10),
            w("a", 0, 20, 4, 15),
            w("a", 35, 35, 1, 35),
            gone("a", 0, 20, 28),
            gone("a", 35, 35, 28),
            w("a", 0, 35, 6, 28),
            w("b", 70, 70, 1, 70),
            w("a", 45, 45, 1, 45),
        ]
    );
    assert_eq!(d.metrics().late_dropped, 2);
    let late: Vec<i64> = d
        .read_output::<String, i64>("late")
        .unwrap()
        .iter()
        .map(|r| r.timestamp)
        .collect();
    assert_eq!(late, vec![5, 39]);
    assert_eq!(
        win_store(&d, "sess"),
        vec![(s("a"), 45, 45, 1), (s("b"), 70, 70, 1)]
    );
}

#[test]
fn session_on_window_close() {
    let mut d = session_topology(Emit::OnWindowClose);
    pipe_all(&mut d, "in", SESSION_INPUT);
    assert_eq!(win_out(&mut d, "out"), vec![w("a", 0, 35, 6, 35)]);
    // close = 75 - 30 = 45: [45,45] is not closed yet (end < close is needed).
    d.pipe("in", s("x"), 0i64, 75);
    assert!(win_out(&mut d, "out").is_empty());
    d.pipe("in", s("x"), 0i64, 200);
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 45, 45, 1, 45),
            w("b", 70, 70, 1, 70),
            w("x", 75, 75, 1, 75)
        ]
    );
    assert_eq!(d.metrics().late_dropped, 2);
}

#[test]
fn session_gap_is_inclusive_and_reduce_merges_values() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_session(SessionWindows::new(ms(10), ms(100)))
        .materialize_as("sr")
        .reduce(|a, v| *a += v)
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    // 0 and 10 are exactly `gap` apart: one session. 21 is 11 after 10: a new one.
    pipe_all(&mut d, "in", &[("a", 1, 0), ("a", 2, 10), ("a", 4, 21)]);
    assert_eq!(
        win_store(&d, "sr"),
        vec![(s("a"), 0, 10, 3), (s("a"), 21, 21, 4)]
    );
    // 15 is within gap of both: everything merges.
    d.pipe("in", s("a"), 8i64, 15);
    assert_eq!(win_store(&d, "sr"), vec![(s("a"), 0, 21, 15)]);
    // to_stream leaves tombstones out.
    assert_eq!(
        win_out(&mut d, "out"),
        vec![
            w("a", 0, 0, 1, 0),
            w("a", 0, 10, 3, 10),
            w("a", 21, 21, 4, 21),
            w("a", 0, 21, 15, 15)
        ]
    );
}

#[test]
fn session_changelog() {
    let mut d = session_topology(Emit::OnUpdate);
    pipe_all(&mut d, "in", &[("a", 0, 0), ("a", 0, 20)]);
    let ch = d.drain_changelogs();
    assert_eq!(
        win_changes(&ch, "sess"),
        vec![(s("a"), 0, 0, Some(1)), (s("a"), 20, 20, Some(1))]
    );
    d.pipe("in", s("a"), 0i64, 10);
    let ch = d.drain_changelogs();
    assert_eq!(
        win_changes(&ch, "sess"),
        vec![
            (s("a"), 0, 0, None),
            (s("a"), 0, 20, Some(3)),
            (s("a"), 20, 20, None)
        ]
    );
    // Closing drops the session from the store and the changelog.
    d.pipe("in", s("b"), 0i64, 100);
    let ch = d.drain_changelogs();
    assert_eq!(
        win_changes(&ch, "sess"),
        vec![(s("a"), 0, 20, None), (s("b"), 100, 100, Some(1))]
    );
}
