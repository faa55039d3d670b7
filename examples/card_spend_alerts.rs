//! Card spend alerts with the Streams API: spend per card in hopping windows (10 minutes,
//! starting every minute), and an alert for every window whose total passes a threshold,
//! emitted once, when the window closes.
//!
//! `cargo run --example card_spend_alerts` runs embedded on generated transactions (a few
//! cards go on a spending spree), prints the alerts, and checks them against the window sums
//! computed directly; `-- --brokers HOST:PORT` runs the same topology against a server.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{check_same, clock, key_per_partition, AnyResult, Env, Rng};
use serde::{Deserialize, Serialize};
use strom::streams::{json_serde, Emit, StreamsBuilder, StreamsConfig, TimeWindows};

/// A card transaction; the record's timestamp is when it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Txn {
    merchant: String,
    amount_cents: i64,
}

/// Spend of one card in one window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Spend {
    txns: i64,
    total_cents: i64,
}

/// What the alerts topic carries, keyed by card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Alert {
    window_start: i64,
    window_end: i64,
    txns: i64,
    total_cents: i64,
}

json_serde!(Txn, Spend, Alert);

const MERCHANTS: &[&str] = &[
    "grocer", "cafe", "fuel", "pharmacy", "bookshop", "cinema", "online", "bakery",
];
const CARDS: u64 = 30;
const TXNS_PER_CARD: u64 = 100;
/// Cards that go on a spree (several large purchases within minutes).
const SPREES: u64 = 4;
/// On the hour, so windows start on whole minutes of the printed clock.
const T0: i64 = 1_699_999_200_000;
const MIN: i64 = 60_000;
const SIZE: i64 = 10 * MIN;
const ADVANCE: i64 = MIN;
const GRACE: i64 = 2 * MIN;
/// How far out of order transactions arrive (less than the grace period).
const MAX_DISORDER: i64 = MIN;
/// Alert when a card spends more than this within one window.
const THRESHOLD_CENTS: i64 = 50_000;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::finish(run().await)
}

async fn run() -> AnyResult<()> {
    let env = Env::from_args("card_spend_alerts").await?;
    let (txns, alerts) = (env.name("card-txns"), env.name("spend-alerts"));
    let partitions = 3;
    env.create_topics(&[txns.clone(), alerts.clone()], partitions)
        .await?;

    // The topology: spend per card and window, final totals only, the large ones as alerts.
    let builder = StreamsBuilder::new();
    builder
        .stream::<String, Txn>(&txns)
        .group_by_key()
        .windowed_by(TimeWindows::hopping(
            Duration::from_millis(SIZE as u64),
            Duration::from_millis(ADVANCE as u64),
            Duration::from_millis(GRACE as u64),
        ))
        .emit(Emit::OnWindowClose)
        .aggregate(Spend::default, |_card, t, s| {
            s.txns += 1;
            s.total_cents += t.amount_cents;
        })
        .to_windowed_stream()
        .filter(|_, s| s.total_cents > THRESHOLD_CENTS)
        .map(|w, s| {
            let alert = Alert {
                window_start: w.window.start,
                window_end: w.window.end,
                txns: s.txns,
                total_cents: s.total_cents,
            };
            (w.key, alert)
        })
        .to(&alerts);
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let config = StreamsConfig::new(&env.name("card-spend-alerts"), &env.bootstrap)
        .commit_interval(Duration::from_millis(200));
    let mut app = env.start(topology, config).await?;

    // Generated transactions: everyday spending on every card, plus a few sprees.
    let mut rng = Rng::new(99);
    let mut all: Vec<(String, Txn, i64)> = Vec::new();
    for c in 0..CARDS {
        let card = format!("card-{c:02}");
        let mut at = T0 + rng.below(10 * MIN as u64) as i64;
        for _ in 0..TXNS_PER_CARD {
            let txn = Txn {
                merchant: MERCHANTS[rng.below(MERCHANTS.len() as u64) as usize].to_string(),
                amount_cents: 300 + rng.below(8_000) as i64,
            };
            all.push((card.clone(), txn, at));
            at += 30_000 + rng.below(11 * MIN as u64) as i64;
        }
    }
    let span = all.iter().map(|t| t.2).max().unwrap_or(T0) - T0;
    for _ in 0..SPREES {
        let card = format!("card-{:02}", rng.below(CARDS));
        let mut at = T0 + rng.below(span as u64) as i64;
        for _ in 0..3 + rng.below(5) {
            let txn = Txn {
                merchant: "online".to_string(),
                amount_cents: 8_000 + rng.below(20_000) as i64,
            };
            all.push((card.clone(), txn, at));
            at += 10_000 + rng.below(3 * MIN as u64) as i64;
        }
    }
    let expected = alerts_directly(&all);
    let last = all.iter().map(|t| t.2).max().unwrap_or(T0);

    // Arrival order: event time plus up to MAX_DISORDER of delay.
    let mut arrivals: Vec<(i64, (String, Txn, i64))> = all
        .into_iter()
        .map(|t| (t.2 + rng.below(MAX_DISORDER as u64) as i64, t))
        .collect();
    arrivals.sort_by_key(|(arrived, _)| *arrived);
    let n = env
        .produce(&txns, arrivals.into_iter().map(|(_, t)| t))
        .await?;
    // Windows close on stream time, kept per partition: one transaction an hour later on a
    // dummy card in every partition closes every window of the real ones.
    let closers = key_per_partition("closer", partitions)
        .into_iter()
        .map(|card| {
            let txn = Txn {
                merchant: "none".to_string(),
                amount_cents: 0,
            };
            (card, txn, last + 60 * MIN)
        });
    env.produce(&txns, closers).await?;
    app.wait_until_running(Duration::from_secs(30)).await?;

    let out = env
        .read_until::<String, Alert>(&alerts, Duration::from_secs(60), |recs| {
            recs.len() >= expected.len()
        })
        .await?;
    let mut got: BTreeMap<(String, i64), Alert> = BTreeMap::new();
    for (card, alert, _) in out {
        let alert = alert.ok_or("an alert was written as null")?;
        let key = (card, alert.window_start);
        if got.insert(key.clone(), alert).is_some() {
            return Err(format!("alert {key:?} emitted twice").into());
        }
    }
    let metrics = app.metrics();
    app.close().await?;
    env.shutdown().await?;

    // One line per run of overlapping alert windows on a card.
    println!(
        "alerts (spend over {:.2} within 10 minutes):",
        THRESHOLD_CENTS as f64 / 100.0
    );
    let mut runs: Vec<(&str, i64, i64, usize, &Alert)> = Vec::new();
    for ((card, _), a) in &got {
        match runs.last_mut() {
            Some(r) if r.0 == card.as_str() && a.window_start < r.2 => {
                r.2 = a.window_end;
                r.3 += 1;
                if a.total_cents > r.4.total_cents {
                    r.4 = a;
                }
            }
            _ => runs.push((card, a.window_start, a.window_end, 1, a)),
        }
    }
    for (card, from, to, windows, peak) in &runs {
        println!(
            "  {card} {} .. {}: {windows:>2} windows, peak {:>8.2} in {} txns ({} .. {})",
            clock(T0, *from),
            clock(T0, *to),
            peak.total_cents as f64 / 100.0,
            peak.txns,
            clock(T0, peak.window_start),
            clock(T0, peak.window_end),
        );
    }

    check_same("alerts", &got, &expected)?;
    println!(
        "card_spend_alerts: {n} transactions, {} alerting windows on {} cards, all as computed directly ({} late records dropped)",
        got.len(),
        runs.iter().map(|r| r.0).collect::<std::collections::BTreeSet<_>>().len(),
        metrics.tasks.late_dropped
    );
    Ok(())
}

/// The alerts computed directly: every window `[s, s + SIZE)` with `s` a multiple of
/// `ADVANCE`, per card, whose transactions add up to more than the threshold.
fn alerts_directly(txns: &[(String, Txn, i64)]) -> BTreeMap<(String, i64), Alert> {
    let mut sums: BTreeMap<(String, i64), Spend> = BTreeMap::new();
    for (card, t, at) in txns {
        let mut start = at - at.rem_euclid(ADVANCE);
        while start > at - SIZE {
            let s = sums.entry((card.clone(), start)).or_default();
            s.txns += 1;
            s.total_cents += t.amount_cents;
            start -= ADVANCE;
        }
    }
    sums.into_iter()
        .filter(|(_, s)| s.total_cents > THRESHOLD_CENTS)
        .map(|((card, start), s)| {
            let alert = Alert {
                window_start: start,
                window_end: start + SIZE,
                txns: s.txns,
                total_cents: s.total_cents,
            };
            ((card, start), alert)
        })
        .collect()
}
