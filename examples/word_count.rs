//! Word count with the Streams API: lines in, a running count per word out.
//!
//! `cargo run --example word_count` runs embedded (Strom's log inside this process) on
//! generated text, prints the counts and exits; `-- --brokers HOST:PORT` runs the same
//! topology against a server.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{AnyResult, Env, Rng};
use strom::streams::{StreamsBuilder, StreamsConfig};

const WORDS: &[&str] = &[
    "stream",
    "log",
    "topic",
    "partition",
    "offset",
    "broker",
    "record",
    "window",
    "join",
    "table",
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::finish(run().await)
}

async fn run() -> AnyResult<()> {
    let env = Env::from_args("word_count").await?;
    let (lines, counts) = (env.name("text-lines"), env.name("word-counts"));
    env.create_topics(&[lines.clone(), counts.clone()], 3)
        .await?;

    // The topology: split lines into words, re-key by word, count.
    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>(&lines)
        .flat_map_values(|line| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone())
        .materialize_as("word-counts-store")
        .count()
        .to_stream()
        .to(&counts);
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let config = StreamsConfig::new(&env.name("word-count"), &env.bootstrap)
        .commit_interval(Duration::from_millis(200));
    let mut app = env.start(topology, config).await?;

    // Generated input, and the answer it should produce.
    let mut rng = Rng::new(42);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let input: Vec<((), String, i64)> = (0..2_000)
        .map(|i| {
            let words: Vec<&str> = (0..1 + rng.below(8))
                .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                .collect();
            for w in &words {
                *expected.entry(w.to_string()).or_default() += 1;
            }
            ((), words.join(" "), 1_700_000_000_000 + i)
        })
        .collect();
    env.produce(&lines, input).await?;
    app.wait_until_running(Duration::from_secs(30)).await?;

    // The latest count per word, once every word reached its expected count.
    let out = env
        .read_until::<String, i64>(&counts, Duration::from_secs(60), |recs| {
            let mut latest = BTreeMap::new();
            for (k, v, _) in recs {
                latest.insert(k.clone(), v.unwrap_or(0));
            }
            latest == expected
        })
        .await?;
    let mut latest = BTreeMap::new();
    for (k, v, _) in out {
        latest.insert(k, v.unwrap_or(0));
    }
    for (word, n) in &latest {
        println!("{word:>10} {n}");
    }
    // Interactive query against the running application's store.
    let store = app.kv_store::<String, i64>("word-counts-store")?;
    println!(
        "store says 'stream' = {:?}",
        store.get(&"stream".to_string())
    );
    app.close().await?;
    env.shutdown().await?;
    println!("word_count: {} words counted", latest.values().sum::<i64>());
    Ok(())
}
