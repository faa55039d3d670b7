//! Stream-stream, stream-table and table-table joins through the `TopologyTestDriver`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use strom_streams::*;

fn s(x: &str) -> String {
    x.to_string()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `(key, value, timestamp)` of every record written to `topic` (tombstones are a failure).
fn out(d: &mut TopologyTestDriver, topic: &str) -> Vec<(String, String, i64)> {
    d.read_output::<String, String>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.expect("unexpected tombstone"), r.timestamp))
        .collect()
}

/// `(key, value or tombstone, timestamp)` of every record written to `topic`.
fn table_out(d: &mut TopologyTestDriver, topic: &str) -> Vec<(String, Option<String>, i64)> {
    d.read_output::<String, String>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

fn r(k: &str, v: &str, ts: i64) -> (String, String, i64) {
    (s(k), s(v), ts)
}

fn opt(x: Option<&String>) -> &str {
    x.map_or("null", String::as_str)
}

fn tombstone(d: &mut TopologyTestDriver, topic: &str, key: &str, ts: i64) {
    d.pipe_raw(
        topic,
        Some(Bytes::copy_from_slice(key.as_bytes())),
        None,
        ts,
    );
}

// ---------------------------------------------------------------------------------------------
// Stream-stream joins

#[derive(Clone, Copy)]
enum Kind {
    Inner,
    Left,
    Outer,
}

fn stream_join(kind: Kind, windows: JoinWindows) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    let l = b.stream::<String, String>("L");
    let rs = b.stream::<String, String>("R");
    let joined = match kind {
        Kind::Inner => l.join(&rs, |a, b| format!("{a}+{b}"), windows),
        Kind::Left => l.left_join(&rs, |a, b| format!("{a}+{}", opt(b)), windows),
        Kind::Outer => l.outer_join(&rs, |a, b| format!("{}+{}", opt(a), opt(b)), windows),
    };
    joined.to("out");
    TopologyTestDriver::new(b.build().unwrap()).unwrap()
}

#[test]
fn inner_join_symmetric_window_out_of_order_and_late() {
    let mut d = stream_join(Kind::Inner, JoinWindows::new(ms(10), ms(5)));
    d.pipe("L", s("a"), s("l1"), 10);
    d.pipe("R", s("a"), s("r1"), 15);
    // Out of order but not late (0 + 10 + 5 >= 15): joins l1, result at the later timestamp.
    d.pipe("R", s("a"), s("r2"), 0);
    d.pipe("L", s("a"), s("l2"), 26);
    d.pipe("R", s("b"), s("rb"), 20);
    assert_eq!(d.metrics().late_dropped, 0);
    // Late: 5 + 10 + 5 < 26.
    d.pipe("L", s("a"), s("l3"), 5);
    assert_eq!(d.metrics().late_dropped, 1);
    d.pipe("R", s("a"), s("r3"), 30);
    // Exactly 10 apart joins (both ends inclusive), 11 apart does not.
    d.pipe("R", s("a"), s("r4"), 36);
    d.pipe("R", s("a"), s("r5"), 37);
    assert_eq!(
        out(&mut d, "out"),
        vec![
            r("a", "l1+r1", 15),
            r("a", "l1+r2", 10),
            r("a", "l2+r3", 30),
            r("a", "l2+r4", 36),
        ]
    );
}

#[test]
fn inner_join_matches_every_pair() {
    let mut d = stream_join(Kind::Inner, JoinWindows::new(ms(5), ms(100)));
    d.pipe("L", s("k"), s("l1"), 1);
    d.pipe("L", s("k"), s("l2"), 2);
    d.pipe("R", s("k"), s("r1"), 3);
    d.pipe("R", s("k"), s("r2"), 4);
    d.pipe("L", s("k"), s("l3"), 20);
    assert_eq!(
        out(&mut d, "out"),
        vec![
            r("k", "l1+r1", 3),
            r("k", "l2+r1", 3),
            r("k", "l1+r2", 4),
            r("k", "l2+r2", 4),
        ]
    );
}

#[test]
fn join_window_before_and_after_are_asymmetric() {
    // Right records may follow left ones by up to 10 but never precede them.
    let w = JoinWindows::new(ms(10), ms(100)).before(Duration::ZERO);
    let mut d = stream_join(Kind::Inner, w);
    d.pipe("L", s("a"), s("l1"), 10);
    d.pipe("R", s("a"), s("r1"), 5); // before l1: no
    d.pipe("R", s("a"), s("r2"), 20); // l1 + 10: yes
    d.pipe("R", s("a"), s("r3"), 21); // l1 + 11: no
    d.pipe("L", s("a"), s("l2"), 4); // r1 at l2 + 1: yes
    d.pipe("L", s("a"), s("l3"), 21); // r3 at l3 + 0: yes; r2 precedes: no
    assert_eq!(
        out(&mut d, "out"),
        vec![r("a", "l1+r2", 20), r("a", "l2+r1", 5), r("a", "l3+r3", 21)]
    );

    // The mirror image: right records may precede by up to 3 and follow by up to 1.
    let w = JoinWindows::new(ms(10), ms(100)).before(ms(3)).after(ms(1));
    let mut d = stream_join(Kind::Inner, w);
    d.pipe("L", s("a"), s("l"), 10);
    for t in [6, 7, 9, 10, 11, 12] {
        d.pipe("R", s("a"), format!("r{t}"), t);
    }
    assert_eq!(
        out(&mut d, "out"),
        vec![
            r("a", "l+r7", 10),
            r("a", "l+r9", 10),
            r("a", "l+r10", 10),
            r("a", "l+r11", 11)
        ]
    );
}

#[test]
fn left_join_emits_unpartnered_left_records_when_their_window_closes() {
    let mut d = stream_join(Kind::Left, JoinWindows::new(ms(10), Duration::ZERO));
    d.pipe("L", s("a"), s("l1"), 0);
    d.pipe("L", s("a"), s("l2"), 5);
    d.pipe("R", s("a"), s("r1"), 12); // joins l2 (5..=15 allowed) but not l1
    d.pipe("L", s("b"), s("lb"), 15);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l2+r1", 12)]);
    // Stream time 21: a right record now needs a timestamp >= 11 to be on time, so nothing
    // can join l1 (which needs <= 10) any more.
    d.pipe("L", s("c"), s("lc"), 21);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l1+null", 0)]);
    d.pipe("R", s("a"), s("r2"), 26);
    d.pipe("L", s("a"), s("l3"), 3); // late: 3 + 10 < 26
    assert_eq!(d.metrics().late_dropped, 1);
    assert!(out(&mut d, "out").is_empty());
    d.pipe("L", s("z"), s("flush"), 1000);
    // Unmatched right records are not emitted by a left join.
    assert_eq!(
        out(&mut d, "out"),
        vec![r("b", "lb+null", 15), r("c", "lc+null", 21)]
    );
}

#[test]
fn unpartnered_results_wait_exactly_until_no_match_is_possible() {
    // Stream time 20: a right record at 10 (= 0 + 10, on time as 10 + 10 >= 20) can still
    // join the left record at 0.
    let mut d = stream_join(Kind::Left, JoinWindows::new(ms(10), Duration::ZERO));
    d.pipe("L", s("a"), s("l"), 0);
    d.pipe("L", s("b"), s("x"), 20);
    assert!(out(&mut d, "out").is_empty());
    d.pipe("R", s("a"), s("r"), 10);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l+r", 10)]);
    assert_eq!(d.metrics().late_dropped, 0);

    // Stream time 21: it cannot any more; the left record is emitted alone.
    let mut d = stream_join(Kind::Left, JoinWindows::new(ms(10), Duration::ZERO));
    d.pipe("L", s("a"), s("l"), 0);
    d.pipe("L", s("b"), s("x"), 21);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l+null", 0)]);
    d.pipe("R", s("a"), s("r"), 10);
    assert_eq!(d.metrics().late_dropped, 1);
    assert!(out(&mut d, "out").is_empty());

    // Grace extends the wait: with grace 5, stream time 25 still allows a match.
    let mut d = stream_join(Kind::Left, JoinWindows::new(ms(10), ms(5)));
    d.pipe("L", s("a"), s("l"), 0);
    d.pipe("L", s("b"), s("x"), 25);
    assert!(out(&mut d, "out").is_empty());
    d.pipe("L", s("b"), s("x"), 26);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l+null", 0)]);

    // With an asymmetric window the wait is before + after (+ grace): here 2 + 7.
    let w = JoinWindows::new(ms(10), Duration::ZERO)
        .before(ms(2))
        .after(ms(7));
    let mut d = stream_join(Kind::Left, w);
    d.pipe("L", s("a"), s("l"), 0);
    d.pipe("L", s("b"), s("x"), 9);
    assert!(out(&mut d, "out").is_empty());
    // A right record at 7 is on time at stream time 9 (7 + before 2 >= 9) and joins.
    d.pipe("R", s("a"), s("r"), 7);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l+r", 7)]);
    let mut d = stream_join(Kind::Left, w);
    d.pipe("L", s("a"), s("l"), 0);
    d.pipe("L", s("b"), s("x"), 10);
    assert_eq!(out(&mut d, "out"), vec![r("a", "l+null", 0)]);
}

#[test]
fn outer_join_emits_unpartnered_records_of_both_sides() {
    let mut d = stream_join(Kind::Outer, JoinWindows::new(ms(10), Duration::ZERO));
    d.pipe("L", s("a"), s("l1"), 0);
    d.pipe("L", s("a"), s("l2"), 5);
    d.pipe("R", s("a"), s("r1"), 12);
    d.pipe("L", s("b"), s("lb"), 15);
    d.pipe("L", s("c"), s("lc"), 21);
    d.pipe("R", s("a"), s("r2"), 26);
    d.pipe("L", s("a"), s("l3"), 3); // late
    d.pipe("R", s("a"), s("r0"), 40); // unmatched when it arrives...
    d.pipe("L", s("a"), s("l9"), 45); // ...but l9 joins it
    assert_eq!(
        out(&mut d, "out"),
        vec![
            r("a", "l2+r1", 12),
            r("a", "l1+null", 0),
            r("b", "lb+null", 15),
            r("a", "l9+r0", 45),
            r("c", "lc+null", 21),
        ]
    );
    d.pipe("L", s("z"), s("flush"), 1000);
    assert_eq!(out(&mut d, "out"), vec![r("a", "null+r2", 26)]);
    assert_eq!(d.metrics().late_dropped, 1);
}

#[test]
fn join_after_key_change_repartitions_both_sides() {
    let b = StreamsBuilder::new();
    let l = b
        .stream::<String, String>("L")
        .select_key(|_, v| v[..1].to_string());
    let rs = b.stream::<String, String>("R");
    l.join(
        &rs,
        |a, b| format!("{a}+{b}"),
        JoinWindows::new(ms(10), ms(10)),
    )
    .to("out");
    let t = b.build().unwrap();
    assert!(t.describe().contains("-repartition"));
    let mut d = TopologyTestDriver::new(t).unwrap();
    d.pipe("L", s("ignored"), s("x1"), 1);
    d.pipe("R", s("x"), s("rx"), 2);
    d.pipe("R", s("y"), s("ry"), 2);
    assert_eq!(out(&mut d, "out"), vec![r("x", "x1+rx", 2)]);
}

// ---------------------------------------------------------------------------------------------
// Stream-table joins

#[test]
fn stream_table_inner_and_left_joins_follow_table_updates_and_deletes() {
    let b = StreamsBuilder::new();
    let st = b.stream::<String, i64>("S");
    let t = b.table::<String, String>("T");
    assert_eq!(t.store_name(), Some("T-table"));
    st.join_table(&t, |v, tv| format!("{v}-{tv}")).to("inner");
    st.left_join_table(&t, |v, tv| format!("{v}-{}", opt(tv)))
        .to("left");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("S", s("a"), 1i64, 1);
    d.pipe("T", s("a"), s("x"), 2);
    d.pipe("S", s("a"), 2i64, 3);
    d.pipe("T", s("a"), s("y"), 4);
    d.pipe("S", s("a"), 3i64, 5);
    tombstone(&mut d, "T", "a", 6);
    d.pipe("S", s("a"), 4i64, 7);
    d.pipe("T", s("b"), s("z"), 8);
    d.pipe("S", s("b"), 5i64, 9);
    // Table updates themselves produce no join output.
    assert_eq!(
        out(&mut d, "inner"),
        vec![r("a", "2-x", 3), r("a", "3-y", 5), r("b", "5-z", 9)]
    );
    assert_eq!(
        out(&mut d, "left"),
        vec![
            r("a", "1-null", 1),
            r("a", "2-x", 3),
            r("a", "3-y", 5),
            r("a", "4-null", 7),
            r("b", "5-z", 9)
        ]
    );
    assert_eq!(
        d.kv_store::<String, String>("T-table").unwrap(),
        vec![(s("b"), s("z"))]
    );
    assert_eq!(d.metrics().skipped, 0);
}

#[test]
fn stream_joins_an_aggregated_table() {
    let b = StreamsBuilder::new();
    let counts = b
        .stream::<String, i64>("C")
        .group_by_key()
        .materialize_as("counts")
        .count();
    b.stream::<String, String>("S")
        .join_table(&counts, |v, n| format!("{v}:{n}"))
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("S", s("a"), s("s0"), 1);
    d.pipe("C", s("a"), 0i64, 2);
    d.pipe("C", s("a"), 0i64, 3);
    d.pipe("S", s("a"), s("s1"), 4);
    assert_eq!(out(&mut d, "out"), vec![r("a", "s1:2", 4)]);
}

#[test]
fn stream_table_join_after_key_change_repartitions_the_stream() {
    let b = StreamsBuilder::new();
    let t = b.table::<String, String>("T");
    b.stream::<String, String>("S")
        .select_key(|_, v| v.clone())
        .join_table(&t, |v, tv| format!("{v}={tv}"))
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("T", s("k1"), s("one"), 1);
    d.pipe("S", s("whatever"), s("k1"), 2);
    d.pipe("S", s("whatever"), s("k2"), 3);
    assert_eq!(out(&mut d, "out"), vec![r("k1", "k1=one", 2)]);
}

// ---------------------------------------------------------------------------------------------
// Table-table joins

#[test]
fn table_table_inner_left_outer_joins_with_deletes() {
    let b = StreamsBuilder::new();
    let l = b.table::<String, i64>("TL");
    let rt = b.table::<String, String>("TR");
    let inner = l.join(&rt, |a, b| format!("{a}/{b}"));
    let left = l.left_join(&rt, |a, b| format!("{a}/{}", b.map_or("-", String::as_str)));
    let outer = l.outer_join(&rt, |a, b| {
        format!(
            "{}/{}",
            a.map_or_else(|| s("-"), i64::to_string),
            b.map_or("-", String::as_str)
        )
    });
    inner.to("inner");
    left.to("left");
    outer.to("outer");
    let stores: Vec<String> = [&inner, &left, &outer]
        .iter()
        .map(|t| t.store_name().unwrap().to_string())
        .collect();
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("TL", s("a"), 1i64, 1);
    d.pipe("TR", s("a"), s("x"), 2);
    d.pipe("TR", s("b"), s("y"), 3);
    tombstone(&mut d, "TL", "a", 4);
    tombstone(&mut d, "TR", "a", 5);
    tombstone(&mut d, "TR", "b", 6);
    d.pipe("TL", s("c"), 3i64, 7);
    d.pipe("TL", s("c"), 4i64, 8);
    d.pipe("TR", s("c"), s("z"), 9);
    let some = |k: &str, v: &str, t: i64| (s(k), Some(s(v)), t);
    let none = |k: &str, t: i64| (s(k), None, t);
    // Inner: a row only while both sides have the key; deletions of such rows only.
    assert_eq!(
        table_out(&mut d, "inner"),
        vec![some("a", "1/x", 2), none("a", 4), some("c", "4/z", 9)]
    );
    assert_eq!(
        table_out(&mut d, "left"),
        vec![
            some("a", "1/-", 1),
            some("a", "1/x", 2),
            none("a", 4),
            some("c", "3/-", 7),
            some("c", "4/-", 8),
            some("c", "4/z", 9),
        ]
    );
    assert_eq!(
        table_out(&mut d, "outer"),
        vec![
            some("a", "1/-", 1),
            some("a", "1/x", 2),
            some("b", "-/y", 3),
            some("a", "-/x", 4),
            none("a", 5),
            none("b", 6),
            some("c", "3/-", 7),
            some("c", "4/-", 8),
            some("c", "4/z", 9),
        ]
    );
    for st in &stores {
        assert_eq!(
            d.kv_store::<String, String>(st).unwrap(),
            vec![(s("c"), s("4/z"))],
            "{st}"
        );
    }
    // Deleting the right side of c: inner deletes, left and outer keep the left value.
    tombstone(&mut d, "TR", "c", 10);
    assert_eq!(table_out(&mut d, "inner"), vec![none("c", 10)]);
    assert_eq!(table_out(&mut d, "left"), vec![some("c", "4/-", 10)]);
    assert_eq!(table_out(&mut d, "outer"), vec![some("c", "4/-", 10)]);
    assert!(d.kv_store::<String, String>(&stores[0]).unwrap().is_empty());
    assert_eq!(
        d.kv_store::<String, String>(&stores[1]).unwrap(),
        vec![(s("c"), s("4/-"))]
    );
}

#[test]
fn table_join_result_is_a_table_that_can_be_joined_again() {
    let b = StreamsBuilder::new();
    let t1 = b.table::<String, i64>("T1");
    let t2 = b.table::<String, i64>("T2");
    let sum = t1.join(&t2, |a, b| a + b);
    b.stream::<String, String>("S")
        .left_join_table(&sum, |v, n| format!("{v}:{n:?}"))
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    d.pipe("T1", s("k"), 1i64, 1);
    d.pipe("S", s("k"), s("a"), 2);
    d.pipe("T2", s("k"), 10i64, 3);
    d.pipe("S", s("k"), s("b"), 4);
    tombstone(&mut d, "T1", "k", 5);
    d.pipe("S", s("k"), s("c"), 6);
    assert_eq!(
        out(&mut d, "out"),
        vec![
            r("k", "a:None", 2),
            r("k", "b:Some(11)", 4),
            r("k", "c:None", 6)
        ]
    );
}
