//! Stateless operators, repartitioning, decoding failures and topology errors, through the
//! `TopologyTestDriver`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strom_streams::*;

fn s(x: &str) -> String {
    x.to_string()
}

/// `(key, value, timestamp)` of every record written to `topic` (tombstones are a test
/// failure).
fn out<K: Serde, V: Serde>(d: &mut TopologyTestDriver, topic: &str) -> Vec<(K, V, i64)> {
    d.read_output::<K, V>(topic)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.value.expect("unexpected tombstone"), r.timestamp))
        .collect()
}

fn driver(b: &StreamsBuilder) -> TopologyTestDriver {
    TopologyTestDriver::new(b.build().unwrap()).unwrap()
}

#[test]
fn map_changes_key_and_value_and_keeps_timestamp() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map(|k, v| (v, format!("{k}!")))
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("a"), 1i64, 10);
    d.pipe("in", s("b"), 2i64, 5);
    assert_eq!(
        out::<i64, String>(&mut d, "out"),
        vec![(1, s("a!"), 10), (2, s("b!"), 5)]
    );
    // Reading takes the records.
    assert!(out::<i64, String>(&mut d, "out").is_empty());
    assert_eq!(d.metrics().processed, 2);
}

#[test]
fn map_values_keeps_key() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map_values(|v| v * 10)
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("a"), 3i64, 1);
    d.pipe("in", s("a"), -4i64, 2);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![(s("a"), 30, 1), (s("a"), -40, 2)]
    );
}

#[test]
fn filter_and_filter_not_partition_the_input() {
    let b = StreamsBuilder::new();
    let st = b.stream::<String, i64>("in");
    st.filter(|k, v| k == "a" || *v > 10).to("yes");
    st.filter_not(|k, v| k == "a" || *v > 10).to("no");
    let mut d = driver(&b);
    for (k, v, t) in [
        ("a", 1, 1),
        ("b", 2, 2),
        ("b", 20, 3),
        ("c", 11, 4),
        ("a", 30, 5),
    ] {
        d.pipe("in", s(k), v as i64, t);
    }
    assert_eq!(
        out::<String, i64>(&mut d, "yes"),
        vec![
            (s("a"), 1, 1),
            (s("b"), 20, 3),
            (s("c"), 11, 4),
            (s("a"), 30, 5)
        ]
    );
    assert_eq!(out::<String, i64>(&mut d, "no"), vec![(s("b"), 2, 2)]);
}

#[test]
fn flat_map_emits_zero_or_more_records() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .flat_map(|k, n| (0..n).map(move |i| (format!("{k}{i}"), i)))
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("x"), 3i64, 7);
    d.pipe("in", s("y"), 0i64, 8);
    d.pipe("in", s("z"), 1i64, 9);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![
            (s("x0"), 0, 7),
            (s("x1"), 1, 7),
            (s("x2"), 2, 7),
            (s("z0"), 0, 9)
        ]
    );
}

#[test]
fn flat_map_values_keeps_key() {
    let b = StreamsBuilder::new();
    b.stream::<String, String>("in")
        .flat_map_values(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("k"), s("a,b,c"), 4);
    d.pipe("in", s("j"), s("d"), 5);
    assert_eq!(
        out::<String, String>(&mut d, "out"),
        vec![
            (s("k"), s("a"), 4),
            (s("k"), s("b"), 4),
            (s("k"), s("c"), 4),
            (s("j"), s("d"), 5)
        ]
    );
}

#[test]
fn select_key_replaces_the_key_only() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .select_key(|k, v| format!("{k}-{v}"))
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("a"), 1i64, 1);
    assert_eq!(out::<String, i64>(&mut d, "out"), vec![(s("a-1"), 1, 1)]);
}

#[test]
fn split_routes_to_first_matching_branch_with_default() {
    let b = StreamsBuilder::new();
    let branches = b
        .stream::<String, i64>("in")
        .split()
        .branch(|_, v| *v < 0)
        .branch(|_, v| *v % 2 == 0)
        .branch(|_, v| *v < 0 || *v == 4) // never reached for 4 (even) or negatives
        .default_branch();
    assert_eq!(branches.len(), 4);
    for (i, br) in branches.iter().enumerate() {
        br.to(&format!("b{i}"));
    }
    let mut d = driver(&b);
    for (v, t) in [(-1, 1), (2, 2), (3, 3), (4, 4), (-6, 5), (7, 6)] {
        d.pipe("in", s("k"), v as i64, t);
    }
    assert_eq!(
        out::<String, i64>(&mut d, "b0"),
        vec![(s("k"), -1, 1), (s("k"), -6, 5)]
    );
    assert_eq!(
        out::<String, i64>(&mut d, "b1"),
        vec![(s("k"), 2, 2), (s("k"), 4, 4)]
    );
    assert!(out::<String, i64>(&mut d, "b2").is_empty());
    assert_eq!(
        out::<String, i64>(&mut d, "b3"),
        vec![(s("k"), 3, 3), (s("k"), 7, 6)]
    );
}

#[test]
fn split_without_default_drops_the_rest() {
    let b = StreamsBuilder::new();
    let branches = b
        .stream::<String, i64>("in")
        .split()
        .branch(|k, _| k == "a")
        .branch(|k, _| k == "b")
        .no_default_branch();
    assert_eq!(branches.len(), 2);
    branches[0].to("a");
    // Branches are ordinary streams: operators can follow them.
    branches[1].map_values(|v| v + 100).to("b");
    let mut d = driver(&b);
    d.pipe("in", s("a"), 1i64, 1);
    d.pipe("in", s("c"), 2i64, 2);
    d.pipe("in", s("b"), 3i64, 3);
    assert_eq!(out::<String, i64>(&mut d, "a"), vec![(s("a"), 1, 1)]);
    assert_eq!(out::<String, i64>(&mut d, "b"), vec![(s("b"), 103, 3)]);
    assert_eq!(d.output_topics(), Vec::<String>::new());
}

#[test]
fn merge_interleaves_in_arrival_order() {
    let b = StreamsBuilder::new();
    let x = b.stream::<String, i64>("x");
    let y = b.stream::<String, i64>("y").map_values(|v| v * 2);
    x.merge(&y).to("out");
    let mut d = driver(&b);
    d.pipe("x", s("a"), 1i64, 1);
    d.pipe("y", s("b"), 2i64, 2);
    d.pipe("x", s("c"), 3i64, 3);
    d.pipe("y", s("d"), 4i64, 0);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![
            (s("a"), 1, 1),
            (s("b"), 4, 2),
            (s("c"), 3, 3),
            (s("d"), 8, 0)
        ]
    );
}

#[test]
fn peek_and_for_each_see_every_record() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let b = StreamsBuilder::new();
    let (s1, s2) = (seen.clone(), done.clone());
    let p = b
        .stream::<String, i64>("in")
        .peek(move |k, v| s1.lock().unwrap().push((k.clone(), *v)));
    p.to("out");
    p.filter(|_, v| *v > 1)
        .for_each(move |k, v| s2.lock().unwrap().push((k.clone(), *v)));
    let mut d = driver(&b);
    d.pipe("in", s("a"), 1i64, 1);
    d.pipe("in", s("b"), 2i64, 2);
    assert_eq!(*seen.lock().unwrap(), vec![(s("a"), 1), (s("b"), 2)]);
    assert_eq!(*done.lock().unwrap(), vec![(s("b"), 2)]);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![(s("a"), 1, 1), (s("b"), 2, 2)]
    );
}

#[test]
fn repartition_goes_through_an_internal_topic() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .select_key(|_, v| format!("k{v}"))
        .repartition()
        .map_values(|v| v + 1)
        .to("out");
    let t = b.build().unwrap();
    let desc = t.describe();
    assert!(desc.contains("Sub-topology: 0"), "{desc}");
    assert!(desc.contains("Sub-topology: 1"), "{desc}");
    assert!(desc.contains("-repartition"), "{desc}");
    let mut d = TopologyTestDriver::new(t).unwrap();
    d.pipe("in", s("a"), 1i64, 3);
    d.pipe("in", s("b"), 2i64, 4);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![(s("k1"), 2, 3), (s("k2"), 3, 4)]
    );
    // Internal topics are not outputs.
    assert_eq!(d.output_topics(), Vec::<String>::new());
    // Two input records, each processed once more from the repartition topic.
    assert_eq!(d.metrics().processed, 4);
}

#[test]
fn group_by_repartitions_and_counts_by_new_key() {
    let b = StreamsBuilder::new();
    let counts = b
        .stream::<String, String>("in")
        .group_by(|_, v| v.len() as i64)
        .materialize_as("by-len")
        .count();
    counts.to_stream().to("out");
    let t = b.build().unwrap();
    assert!(t.describe().contains("-repartition"));
    let mut d = TopologyTestDriver::new(t).unwrap();
    for (k, v, ts) in [
        ("a", "xx", 1),
        ("b", "yyy", 2),
        ("c", "zz", 3),
        ("a", "w", 4),
    ] {
        d.pipe("in", s(k), s(v), ts);
    }
    assert_eq!(
        out::<i64, i64>(&mut d, "out"),
        vec![(2, 1, 1), (3, 1, 2), (2, 2, 3), (1, 1, 4)]
    );
    assert_eq!(
        d.kv_store::<i64, i64>("by-len").unwrap(),
        vec![(1, 1), (2, 2), (3, 1)]
    );
}

#[test]
fn group_by_key_after_map_repartitions() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map(|k, v| (k.to_uppercase(), v))
        .group_by_key()
        .reduce(|a, v| *a += v)
        .to_stream()
        .to("out");
    let t = b.build().unwrap();
    assert!(t.describe().contains("-repartition"));
    let mut d = TopologyTestDriver::new(t).unwrap();
    d.pipe("in", s("a"), 1i64, 1);
    d.pipe("in", s("A"), 2i64, 2);
    assert_eq!(
        out::<String, i64>(&mut d, "out"),
        vec![(s("A"), 1, 1), (s("A"), 3, 2)]
    );
}

#[test]
fn group_by_key_without_key_change_does_not_repartition() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .map_values(|v| v + 1)
        .filter(|_, v| *v > 0)
        .group_by_key()
        .count()
        .to_stream()
        .to("out");
    let t = b.build().unwrap();
    assert!(!t.describe().contains("-repartition"), "{}", t.describe());
    assert!(!t.describe().contains("Sub-topology: 1"));
}

#[test]
fn undecodable_records_are_skipped_and_counted() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in").to("out");
    let mut d = driver(&b);
    // Three bytes are not an i64.
    d.pipe_raw(
        "in",
        Some(Bytes::from_static(b"k")),
        Some(Bytes::from_static(b"abc")),
        1,
    );
    // A null value is not an i64 either.
    d.pipe_raw("in", Some(Bytes::from_static(b"k")), None, 2);
    // Invalid UTF-8 is not a String key.
    d.pipe_raw(
        "in",
        Some(Bytes::from_static(&[0xff, 0xfe])),
        Some(Bytes::copy_from_slice(&5i64.to_be_bytes())),
        3,
    );
    d.pipe("in", s("ok"), 9i64, 4);
    let m = d.metrics();
    assert_eq!(m.skipped, 3);
    assert_eq!(m.processed, 4);
    assert_eq!(m.late_dropped, 0);
    assert_eq!(out::<String, i64>(&mut d, "out"), vec![(s("ok"), 9, 4)]);
}

#[test]
fn unit_keys_and_optional_values_decode_nulls() {
    let b = StreamsBuilder::new();
    b.stream::<(), Option<i64>>("in")
        .map_values(|v| v.unwrap_or(-1))
        .to("out");
    let mut d = driver(&b);
    d.pipe_raw("in", None, None, 1);
    d.pipe("in", (), Some(4i64), 2);
    assert_eq!(out::<(), i64>(&mut d, "out"), vec![((), -1, 1), ((), 4, 2)]);
    assert_eq!(d.metrics().skipped, 0);
}

#[test]
fn records_to_unknown_topics_are_ignored() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in").to("out");
    let mut d = driver(&b);
    d.pipe("other", s("a"), 1i64, 1);
    assert_eq!(d.metrics().processed, 0);
    assert!(d.output_topics().is_empty());
}

#[test]
fn stream_timestamps_can_be_extracted() {
    let b = StreamsBuilder::new();
    b.stream_with_timestamps::<String, i64>("in", |_, v, ts| v + ts)
        .to("out");
    let mut d = driver(&b);
    d.pipe("in", s("a"), 100i64, 5);
    assert_eq!(out::<String, i64>(&mut d, "out"), vec![(s("a"), 100, 105)]);
}

#[test]
fn two_sources_on_one_topic_is_an_error() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in").to("a");
    b.stream::<String, i64>("in").to("b");
    match b.build() {
        Err(Error::Topology(m)) => assert!(m.contains("in"), "{m}"),
        other => panic!("expected a topology error, got {other:?}"),
    }
}

#[test]
fn stream_and_table_on_one_topic_is_an_error() {
    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in").to("a");
    let _t = b.table::<String, i64>("in");
    assert!(matches!(b.build(), Err(Error::Topology(_))));
}

#[test]
fn duplicate_store_names_are_an_error() {
    let b = StreamsBuilder::new();
    let st = b.stream::<String, i64>("in");
    st.group_by_key().materialize_as("s").count();
    st.group_by_key()
        .windowed_by(TimeWindows::tumbling(
            Duration::from_millis(10),
            Duration::ZERO,
        ))
        .materialize_as("s")
        .count();
    match b.build() {
        Err(Error::Topology(m)) => assert!(m.contains("\"s\""), "{m}"),
        other => panic!("expected a topology error, got {other:?}"),
    }
}

#[test]
fn joining_a_windowed_table_is_an_error() {
    let b = StreamsBuilder::new();
    let windowed = b
        .stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(
            Duration::from_millis(10),
            Duration::ZERO,
        ))
        .count();
    b.stream::<Windowed<String>, i64>("w")
        .join_table(&windowed, |a, b| a + b)
        .to("out");
    assert!(matches!(b.build(), Err(Error::Topology(_))));

    let b = StreamsBuilder::new();
    let w1 = b
        .stream::<String, i64>("in")
        .group_by_key()
        .windowed_by_session(SessionWindows::new(
            Duration::from_millis(10),
            Duration::ZERO,
        ))
        .count();
    let t2 = b.table::<Windowed<String>, i64>("t2");
    t2.join(&w1, |a, b| a + b);
    assert!(matches!(b.build(), Err(Error::Topology(_))));
}

#[test]
fn empty_builder_is_an_error() {
    assert!(matches!(
        StreamsBuilder::new().build(),
        Err(Error::Topology(_))
    ));
}

#[test]
fn describe_names_every_node() {
    let b = StreamsBuilder::new();
    let st = b.stream::<String, i64>("input-topic");
    let parts = st
        .filter(|_, v| *v > 0)
        .split()
        .branch(|_, v| *v > 5)
        .default_branch();
    parts[0].map_values(|v| v * 2).to("big");
    parts[1]
        .group_by_key()
        .materialize_as("small-counts")
        .count()
        .to_stream()
        .to("small");
    let t = b.build().unwrap();
    let desc = t.describe();
    for name in [
        "Topologies:",
        "Sub-topology: 0",
        "Source: KSTREAM-SOURCE-0000000000 (topics: [input-topic])",
        "Processor: KSTREAM-FILTER-0000000001",
        "KSTREAM-BRANCH-0000000002",
        "KSTREAM-BRANCHCHILD-0000000003",
        "KSTREAM-BRANCHCHILD-0000000004",
        "KSTREAM-MAPVALUES-0000000005",
        "Sink: KSTREAM-SINK-0000000006 (topic: big)",
        "KSTREAM-AGGREGATE-0000000007 (stores: [small-counts])",
        "KTABLE-TOSTREAM-0000000008",
        "(topic: small)",
        "--> KSTREAM-BRANCHCHILD-0000000003, KSTREAM-BRANCHCHILD-0000000004",
        "<-- KSTREAM-FILTER-0000000001",
    ] {
        assert!(desc.contains(name), "{name:?} missing from\n{desc}");
    }
    assert!(!desc.contains("Sub-topology: 1"), "{desc}");
    // Debug prints the description too.
    assert_eq!(format!("{t:?}"), desc);
}
