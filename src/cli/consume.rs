//! `strom consume <topic>`: records to standard output, as text or one JSON object per line.
//!
//! Without `--group` the consumer assigns itself every partition (or `--partition`) and starts
//! at `--from`. With `--group` it subscribes as a group member (or, with `--partition`, assigns
//! that partition and commits for the group); partitions start at the group's committed offset,
//! else at `--from`, and offsets are committed as it goes and when it exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use strom_client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceListener, TopicPartition,
};

use super::{msg, parse_time_ms, Out, Result};

/// Where consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest stored record.
    Beginning,
    /// Only records produced from now on.
    End,
    /// This offset in every partition.
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    /// `beginning`, `end`, an offset, or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "beginning" | "earliest" | "start" => Ok(StartAt::Beginning),
            "end" | "latest" => Ok(StartAt::End),
            t if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() => t
                .parse()
                .map(StartAt::Offset)
                .map_err(|_| format!("--from {s:?}: offset out of range")),
            t if t.contains('T') || t.contains(' ') => parse_time_ms("--from", t).map(StartAt::Time),
            _ => Err(format!(
                "--from {s:?}: expected beginning, end, an offset, or an RFC 3339 time such as 2026-01-31T12:00:00Z"
            )),
        }
    }
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The value, one per line (`key<TAB>value` with `print_key`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of `strom consume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// The topic.
    pub topic: String,
    /// `beginning`, `end`, an offset, or an RFC 3339 time (default: end).
    pub from: Option<String>,
    /// Consume as a member of this group, committing offsets.
    pub group: Option<String>,
    /// Exit after this many records.
    pub count: Option<u64>,
    /// Only this partition.
    pub partition: Option<i32>,
    /// Output format.
    pub format: Format,
    /// In text format, print `key<TAB>value`.
    pub print_key: bool,
    /// Exit (successfully) after this long without a new record, counted from the last record
    /// or from when the consumer is ready (joined its group, first fetch answered).
    pub timeout_ms: Option<u64>,
}

/// Partitions the group just handed to this consumer, for `--from` to place.
#[derive(Clone, Default)]
struct Added(Arc<Mutex<Vec<TopicPartition>>>);

impl Added {
    fn push(&self, parts: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(parts);
    }
    fn take(&self) -> Vec<TopicPartition> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RebalanceListener for Added {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.push(partitions);
    }
}

/// Consumes until `--count`, `--timeout-ms`, Ctrl-C, or a closed standard output.
pub async fn run(brokers: &str, o: ConsumeOptions) -> Result<()> {
    let from: StartAt = o.from.as_deref().unwrap_or("end").parse()?;
    // Fail with the real reason (unreachable, unknown topic) before any group is joined.
    let info = Admin::connect(brokers)
        .await
        .map_err(msg)?
        .describe_topic(&o.topic)
        .await
        .map_err(msg)?;
    let all: Vec<TopicPartition> = match o.partition {
        Some(p) if info.partitions.iter().any(|x| x.partition == p) => {
            vec![TopicPartition::new(&o.topic, p)]
        }
        Some(p) => {
            return Err(format!(
                "topic {} has {} partitions; partition {p} does not exist",
                o.topic,
                info.partitions.len()
            ))
        }
        None => info
            .partitions
            .iter()
            .map(|p| TopicPartition::new(&o.topic, p.partition))
            .collect(),
    };
    let mut config = ConsumerConfig::new(brokers).offset_reset(match from {
        StartAt::Beginning => OffsetReset::Earliest,
        // An offset or time is placed by a seek; an offset out of range then goes to the end.
        StartAt::End | StartAt::Offset(_) | StartAt::Time(_) => OffsetReset::Latest,
    });
    if let Some(g) = &o.group {
        config = config.group_id(g).auto_commit(true);
    }
    if let Some(n) = o.count {
        // Fewer records handed out past --count (they would be sought back anyway).
        config.max_poll_records = n.clamp(1, 500) as usize;
    }
    let fetch_max_wait = config.fetch_max_wait;
    let mut consumer = Consumer::new(config).await.map_err(msg)?;
    let added = Added::default();
    let subscribed = o.group.is_some() && o.partition.is_none();
    if subscribed {
        consumer.set_rebalance_listener(added.clone());
        consumer
            .subscribe(std::slice::from_ref(&o.topic))
            .map_err(msg)?;
    } else {
        consumer.assign(&all).map_err(msg)?;
        if o.group.is_some() {
            // Committed offsets win; the rest start at --from.
            place_uncommitted(&mut consumer, &all, from).await?;
        } else {
            place(&mut consumer, &all, from)?;
        }
    }
    let result = consume(&mut consumer, &o, from, &added, subscribed, fetch_max_wait).await;
    // Closing commits (with a group); a second Ctrl-C does not wait for it.
    let closed = tokio::select! {
        r = consumer.close() => r.map_err(msg),
        _ = tokio::signal::ctrl_c() => Err("interrupted while closing; the last offsets may not be committed".into()),
    };
    result?;
    closed
}

/// Puts partitions at `from`.
fn place(consumer: &mut Consumer, parts: &[TopicPartition], from: StartAt) -> Result<()> {
    match from {
        StartAt::Beginning => consumer.seek_to_beginning(parts),
        StartAt::End => consumer.seek_to_end(parts),
        StartAt::Offset(off) => parts.iter().try_for_each(|tp| consumer.seek(tp, off)),
        StartAt::Time(ms) => consumer.seek_to_timestamp(parts, ms),
    }
    .map_err(msg)
}

async fn consume(
    consumer: &mut Consumer,
    o: &ConsumeOptions,
    from: StartAt,
    added: &Added,
    subscribed: bool,
    fetch_max_wait: Duration,
) -> Result<()> {
    let idle = o.timeout_ms.map(Duration::from_millis);
    let started = Instant::now();
    // The idle clock runs from the last record, or from when the consumer is ready: it joined
    // its group (if any) and heard from the leader of every partition it has. Joining can take
    // seconds (group.initial.rebalance.delay.ms), which must not count as "no new record".
    let mut idle_since: Option<Instant> = None;
    let mut out = Out::new();
    let mut printed = 0u64;
    let interrupt = super::interrupted();
    tokio::pin!(interrupt);
    loop {
        if o.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let now = Instant::now();
        if idle_since.is_none() && (ready(consumer, subscribed) || now - started >= STARTUP_GRACE) {
            idle_since = Some(now);
        }
        if let (Some(idle), Some(since)) = (idle, idle_since) {
            if now >= since + idle {
                return Ok(());
            }
        }
        // Short polls, so that the idle clock starts and --from places partitions the group
        // hands out before their records are printed.
        let mut wait = POLL_SLICE;
        if let (Some(idle), Some(since)) = (idle, idle_since) {
            wait = wait.min((since + idle).saturating_duration_since(now));
        }
        let polled = tokio::select! {
            r = consumer.poll(wait) => r,
            _ = &mut interrupt => return Ok(()),
        };
        let mut records = match polled {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(POLL_SLICE).await;
                continue;
            }
            Err(e) => return Err(msg(e)),
        };
        let new = added.take();
        if !new.is_empty() {
            let moved = place_uncommitted(consumer, &new, from).await?;
            if !moved.is_empty() {
                records.retain(|r| {
                    !moved.contains(&TopicPartition::new(r.topic.clone(), r.partition))
                });
                // A fetch from the old position may be in flight (a seek does not cancel it):
                // the first records from the new one can take up to fetch.max.wait.ms.
                idle_since = Some(Instant::now() + fetch_max_wait);
            }
        }
        if records.is_empty() {
            continue;
        }
        idle_since = Some(Instant::now());
        let mut rest = records.into_iter();
        for r in rest.by_ref() {
            if !out.write(&render(&r, o.format, o.print_key))? {
                return Ok(());
            }
            printed += 1;
            if o.count.is_some_and(|n| printed >= n) {
                break;
            }
        }
        // Records handed out but not printed go back, so a group commits only what was shown.
        let mut unprinted: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in rest {
            unprinted
                .entry(TopicPartition::new(r.topic, r.partition))
                .or_insert(r.offset);
        }
        for (tp, off) in &unprinted {
            consumer.seek(tp, *off).map_err(msg)?;
        }
        if !out.flush()? {
            return Ok(());
        }
    }
}

/// Longest single `poll`.
const POLL_SLICE: Duration = Duration::from_millis(200);

/// After this long the idle clock of `--timeout-ms` runs even if the consumer is not ready
/// (a partition without a leader, a group that never settles).
const STARTUP_GRACE: Duration = Duration::from_secs(30);

/// Whether the consumer has joined its group (if subscribed) and has fetched from every
/// partition it owns.
fn ready(consumer: &Consumer, subscribed: bool) -> bool {
    let joined = consumer
        .member()
        .is_some_and(|(_, generation)| generation >= 0);
    (joined || !subscribed)
        && consumer
            .assignment()
            .iter()
            .all(|tp| consumer.high_watermark(tp).is_some())
}

/// Places the partitions the group has no committed offset for at `from`; returns them.
async fn place_uncommitted(
    consumer: &mut Consumer,
    parts: &[TopicPartition],
    from: StartAt,
) -> Result<Vec<TopicPartition>> {
    if !matches!(from, StartAt::Offset(_) | StartAt::Time(_)) {
        // Beginning and end are the consumer's reset policy already.
        return Ok(Vec::new());
    }
    let committed = consumer.committed(parts).await.map_err(msg)?;
    let fresh: Vec<TopicPartition> = parts
        .iter()
        .filter(|tp| committed.get(*tp).is_none_or(|&o| o < 0))
        .filter(|tp| consumer.assignment().contains(tp))
        .cloned()
        .collect();
    place(consumer, &fresh, from)?;
    Ok(fresh)
}

/// One line of output for a record.
fn render(r: &ConsumerRecord, format: Format, print_key: bool) -> Vec<u8> {
    match format {
        Format::Text => {
            let mut line = Vec::new();
            if print_key {
                line.extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
                line.push(b'\t');
            }
            line.extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
            line.push(b'\n');
            line
        }
        Format::Json => {
            let (key, key_encoding) = text_or_base64(r.key.as_ref());
            let (value, value_encoding) = text_or_base64(r.value.as_ref());
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    let (value, value_encoding) = text_or_base64(h.value.as_ref());
                    JsonHeader {
                        key: &h.key,
                        value,
                        value_encoding,
                    }
                })
                .collect();
            let json = JsonRecord {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key,
                key_encoding,
                value,
                value_encoding,
                headers,
            };
            // Serializing plain strings and numbers cannot fail.
            let mut line = serde_json::to_vec(&json).unwrap_or_default();
            line.push(b'\n');
            line
        }
    }
}

/// A record as printed by `--format json`. Keys, values and header values are UTF-8 strings,
/// or base64 with `*_encoding: "base64"` when they are not valid UTF-8; `null` when absent.
#[derive(Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
}

fn text_or_base64(b: Option<&Bytes>) -> (Option<String>, Option<&'static str>) {
    match b {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (
                Some(base64::engine::general_purpose::STANDARD.encode(b)),
                Some("base64"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_client::Header;

    #[test]
    fn from_accepts_positions_offsets_and_times() {
        assert_eq!("beginning".parse(), Ok(StartAt::Beginning));
        assert_eq!("end".parse(), Ok(StartAt::End));
        assert_eq!("42".parse(), Ok(StartAt::Offset(42)));
        assert_eq!(
            "1970-01-01T00:00:01Z".parse::<StartAt>(),
            Ok(StartAt::Time(1000))
        );
        assert!("-3".parse::<StartAt>().is_err());
        assert!("soon".parse::<StartAt>().unwrap_err().contains("expected"));
        assert!("2026-13-01T00:00:00Z".parse::<StartAt>().is_err());
    }

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp: 1234,
            log_append_time: false,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![
                Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"v")),
                },
                Header {
                    key: "bin".into(),
                    value: Some(Bytes::from_static(&[0xff, 0x00])),
                },
            ],
            leader_epoch: 0,
        }
    }

    #[test]
    fn json_says_when_bytes_are_base64() {
        let line = render(
            &record(Some(b"k"), Some(&[0xc3, 0x28])),
            Format::Json,
            false,
        );
        let v: serde_json::Value = serde_json::from_slice(&line).expect("one JSON object");
        assert_eq!(v["key"], "k");
        assert!(v.get("key_encoding").is_none());
        assert_eq!(v["value"], "wyg=");
        assert_eq!(v["value_encoding"], "base64");
        assert_eq!(v["partition"], 1);
        assert_eq!(v["offset"], 7);
        assert_eq!(v["timestamp"], 1234);
        assert_eq!(v["headers"][0]["key"], "h");
        assert_eq!(v["headers"][0]["value"], "v");
        assert_eq!(v["headers"][1]["value"], "/wA=");
        assert_eq!(v["headers"][1]["value_encoding"], "base64");
        assert_eq!(line.last(), Some(&b'\n'));
    }

    #[test]
    fn text_prints_value_or_key_tab_value() {
        assert_eq!(
            render(&record(Some(b"k"), Some(b"v")), Format::Text, false),
            b"v\n"
        );
        assert_eq!(
            render(&record(Some(b"k"), Some(b"v")), Format::Text, true),
            b"k\tv\n"
        );
        assert_eq!(
            render(&record(None, None), Format::Text, true),
            b"null\tnull\n"
        );
    }
}
