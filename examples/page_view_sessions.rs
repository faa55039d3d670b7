//! Page-view sessions with the Streams API: views per user, grouped into session windows of
//! event time (a new session after 30 minutes without a view), each session emitted once,
//! when it closes.
//!
//! `cargo run --example page_view_sessions` runs embedded on generated views (slightly out of
//! order, as they would arrive from many web servers), prints the sessions, and checks them
//! against sessions computed directly from the same views; `-- --brokers HOST:PORT` runs the
//! same topology against a server.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{check_same, clock, key_per_partition, AnyResult, Env, Rng};
use serde::{Deserialize, Serialize};
use strom::streams::{json_serde, Emit, SessionWindows, StreamsBuilder, StreamsConfig, Windowed};

/// One page view, as a web server reports it: `at` is when it happened (event time).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PageView {
    user: String,
    page: String,
    /// How long the page stayed open.
    dwell_ms: i64,
    /// Event time, ms since the epoch.
    at: i64,
}

/// What a session adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SessionStats {
    views: i64,
    dwell_ms: i64,
    pages: BTreeSet<String>,
}

json_serde!(PageView, SessionStats);

const PAGES: &[&str] = &[
    "/",
    "/search",
    "/product",
    "/cart",
    "/checkout",
    "/help",
    "/account",
    "/blog",
];
const USERS: u64 = 12;
const VIEWS_PER_USER: u64 = 200;
const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const GAP: i64 = 30 * MIN;
const GRACE: i64 = 5 * MIN;
/// How far out of event-time order views arrive (less than the grace period, so none is late).
const MAX_DISORDER: i64 = 3 * MIN;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::finish(run().await)
}

async fn run() -> AnyResult<()> {
    let env = Env::from_args("page_view_sessions").await?;
    let (views, sessions) = (env.name("page-views"), env.name("user-sessions"));
    let partitions = 3;
    env.create_topics(&[views.clone(), sessions.clone()], partitions)
        .await?;

    // The topology: views keyed by user, timestamped by when they happened, sessionized.
    let builder = StreamsBuilder::new();
    builder
        .stream_with_timestamps::<String, PageView>(&views, |_, v, _| v.at)
        .group_by_key()
        .windowed_by_session(SessionWindows::new(
            Duration::from_millis(GAP as u64),
            Duration::from_millis(GRACE as u64),
        ))
        .emit(Emit::OnWindowClose)
        .aggregate(
            SessionStats::default,
            |_user, v, s| {
                s.views += 1;
                s.dwell_ms += v.dwell_ms;
                s.pages.insert(v.page);
            },
            // A late view can bridge two sessions: they merge into one.
            |_user, into, other| {
                into.views += other.views;
                into.dwell_ms += other.dwell_ms;
                into.pages.extend(other.pages);
            },
        )
        .to_windowed_stream()
        .to(&sessions);
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let config = StreamsConfig::new(&env.name("page-view-sessions"), &env.bootstrap)
        .commit_interval(Duration::from_millis(200));
    let mut app = env.start(topology, config).await?;

    // Generated views: per user, bursts of activity separated by longer pauses.
    let mut rng = Rng::new(7);
    let mut all: Vec<PageView> = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u:02}");
        let mut at = T0 + rng.below(60) as i64 * MIN;
        for _ in 0..VIEWS_PER_USER {
            all.push(PageView {
                user: user.clone(),
                page: PAGES[rng.below(PAGES.len() as u64) as usize].to_string(),
                dwell_ms: 1_000 + rng.below(120_000) as i64,
                at,
            });
            at += if rng.below(100) < 85 {
                10_000 + rng.below(10 * MIN as u64) as i64 // browsing on
            } else {
                GAP / 2 + rng.below(4 * 60 * MIN as u64) as i64 // a pause, often a new session
            };
        }
    }
    // Arrival order: event time plus up to MAX_DISORDER of delivery delay.
    let mut arrivals: Vec<(i64, PageView)> = all
        .iter()
        .map(|v| (v.at + rng.below(MAX_DISORDER as u64) as i64, v.clone()))
        .collect();
    arrivals.sort_by_key(|(arrived, _)| *arrived);
    let last = all.iter().map(|v| v.at).max().unwrap_or(T0);
    let expected = sessions_of(&all);

    let input = arrivals
        .into_iter()
        .map(|(arrived, v)| (v.user.clone(), v, arrived));
    let n = env.produce(&views, input).await?;
    // Session windows close on stream time, which only records move, and each partition keeps
    // its own: one view a day later on a dummy user in every partition closes every session.
    let closers = key_per_partition("closer", partitions)
        .into_iter()
        .map(|user| {
            let v = PageView {
                user: user.clone(),
                page: "/".into(),
                dwell_ms: 0,
                at: last + 24 * 60 * MIN,
            };
            (user, v, last + 24 * 60 * MIN)
        });
    env.produce(&views, closers).await?;
    app.wait_until_running(Duration::from_secs(30)).await?;

    let out = env
        .read_until::<Windowed<String>, SessionStats>(&sessions, Duration::from_secs(60), |recs| {
            recs.len() >= expected.len()
        })
        .await?;
    let mut got: BTreeMap<(String, i64, i64), SessionStats> = BTreeMap::new();
    for (w, stats, _) in out {
        let stats = stats.ok_or("a closed session was emitted as null")?;
        let key = (w.key, w.window.start, w.window.end);
        if got.insert(key.clone(), stats).is_some() {
            return Err(format!("session {key:?} emitted twice").into());
        }
    }
    let metrics = app.metrics();
    app.close().await?;
    env.shutdown().await?;

    println!(
        "{:<8} {:>8} {:>6} {:>12} {:>14}",
        "user", "sessions", "views", "avg views", "longest"
    );
    let mut by_user: BTreeMap<&str, Vec<(i64, i64, &SessionStats)>> = BTreeMap::new();
    for ((user, start, end), s) in &got {
        by_user.entry(user).or_default().push((*start, *end, s));
    }
    for (user, list) in &by_user {
        let views: i64 = list.iter().map(|(_, _, s)| s.views).sum();
        let longest = list.iter().map(|(s, e, _)| e - s).max().unwrap_or(0);
        println!(
            "{user:<8} {:>8} {views:>6} {:>12.1} {:>11} min",
            list.len(),
            views as f64 / list.len() as f64,
            longest / MIN
        );
    }
    println!("the five busiest sessions:");
    let mut busiest: Vec<_> = got.iter().collect();
    busiest.sort_by_key(|(k, s)| (-s.views, (*k).clone()));
    for ((user, start, end), s) in busiest.into_iter().take(5) {
        println!(
            "  {user} {} .. {}: {} views, {} s of dwell time, {} distinct pages",
            clock(T0, *start),
            clock(T0, *end),
            s.views,
            s.dwell_ms / 1000,
            s.pages.len()
        );
    }

    check_same("sessions", &got, &expected)?;
    println!(
        "page_view_sessions: {n} views, {} sessions, all as computed directly ({} late records dropped)",
        got.len(),
        metrics.tasks.late_dropped
    );
    Ok(())
}

/// The sessions computed directly: each user's views in time order, split wherever two
/// consecutive views are more than `GAP` apart.
fn sessions_of(views: &[PageView]) -> BTreeMap<(String, i64, i64), SessionStats> {
    let mut by_user: BTreeMap<&str, Vec<&PageView>> = BTreeMap::new();
    for v in views {
        by_user.entry(&v.user).or_default().push(v);
    }
    let mut out = BTreeMap::new();
    for (user, mut vs) in by_user {
        vs.sort_by_key(|v| v.at);
        let mut start = 0;
        for i in 1..=vs.len() {
            if i == vs.len() || vs[i].at - vs[i - 1].at > GAP {
                let s = &vs[start..i];
                let stats = SessionStats {
                    views: s.len() as i64,
                    dwell_ms: s.iter().map(|v| v.dwell_ms).sum(),
                    pages: s.iter().map(|v| v.page.clone()).collect(),
                };
                out.insert((user.to_string(), s[0].at, s[s.len() - 1].at), stats);
                start = i;
            }
        }
    }
    out
}
