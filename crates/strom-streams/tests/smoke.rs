//! A first end-to-end check of the DSL through the test driver.
#![allow(clippy::unwrap_used)]
use std::time::Duration;
use strom_streams::*;

#[test]
fn word_count_and_windows() {
    let b = StreamsBuilder::new();
    let counts = b
        .stream::<(), String>("lines")
        .flat_map_values(|l| {
            l.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, w| w.clone())
        .materialize_as("counts")
        .count();
    counts.to_stream().to("counts-out");
    let t = b.build().unwrap();
    println!("{}", t.describe());
    let mut d = TopologyTestDriver::new(t).unwrap();
    d.pipe("lines", (), "a b a".to_string(), 1);
    d.pipe("lines", (), "b c".to_string(), 2);
    let out = d.read_output::<String, i64>("counts-out").unwrap();
    assert_eq!(out.len(), 5);
    let store = d.kv_store::<String, i64>("counts").unwrap();
    assert_eq!(
        store,
        vec![("a".into(), 2), ("b".into(), 2), ("c".into(), 1)]
    );

    let b = StreamsBuilder::new();
    b.stream::<String, i64>("in")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(
            Duration::from_millis(10),
            Duration::from_millis(5),
        ))
        .emit(Emit::OnWindowClose)
        .late_records_to("late")
        .count()
        .to_stream()
        .to("out");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    for (k, ts) in [
        ("a", 1),
        ("a", 5),
        ("b", 12),
        ("a", 3),
        ("a", 16),
        ("a", 2),
        ("x", 40),
    ] {
        d.pipe("in", k.to_string(), 1i64, ts);
    }
    let out = d.read_output::<Windowed<String>, i64>("out").unwrap();
    let got: Vec<_> = out
        .iter()
        .map(|r| (r.key.key.clone(), r.key.window.start, r.value.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![("a".into(), 0, 3), ("a".into(), 10, 1), ("b".into(), 10, 1)]
    );
    assert_eq!(d.metrics().late_dropped, 1);
    assert_eq!(d.read_output_raw("late").len(), 1);
}

#[test]
fn extreme_timestamps_are_skipped_not_hung() {
    let b = StreamsBuilder::new();
    let s = b.stream::<String, i64>("in");
    let g = s.group_by_key();
    g.windowed_by(TimeWindows::hopping(
        Duration::from_secs(10),
        Duration::from_secs(1),
        Duration::ZERO,
    ))
    .count()
    .to_stream()
    .to("hop");
    g.windowed_by_sliding(SlidingWindows::new(Duration::from_secs(10), Duration::ZERO))
        .materialize_as("sliding")
        .count()
        .to_stream()
        .to("slide");
    g.windowed_by_session(SessionWindows::new(Duration::from_secs(10), Duration::ZERO))
        .materialize_as("session")
        .count()
        .to_stream()
        .to("sess");
    let mut d = TopologyTestDriver::new(b.build().unwrap()).unwrap();
    for ts in [i64::MAX, i64::MAX - 1, i64::MIN, -1] {
        d.pipe("in", "k".to_string(), 1i64, ts);
    }
    assert_eq!(
        d.metrics().skipped,
        12,
        "each record skipped by each of the three windowed operators"
    );
    d.pipe("in", "k".to_string(), 1i64, 5);
    assert_eq!(
        d.read_output_raw("hop").len(),
        1,
        "windows start at 0 or later"
    );
    assert_eq!(d.read_output_raw("slide").len(), 1);
    assert_eq!(d.read_output_raw("sess").len(), 1);
}
