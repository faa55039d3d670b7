//! `strom produce <topic>`: one record per input line.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use strom_client::config::parse_compression;
use strom_client::{
    Acks, Admin, DeliveryFuture, Error, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{msg, parse_key_value, Out, Result};

/// How long the first record may wait for a topic that did not exist to be auto-created.
const AUTO_CREATE_WAIT: Duration = Duration::from_secs(10);

/// Settings of `strom produce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOptions {
    /// Destination topic.
    pub topic: String,
    /// Read lines from this file instead of standard input.
    pub file: Option<PathBuf>,
    /// Split each line at the first occurrence into key and value (`\t` means a tab).
    pub key_separator: Option<String>,
    /// `KEY=VALUE` headers added to every record.
    pub headers: Vec<String>,
    /// Send every record to this partition (default: by key, or sticky without one).
    pub partition: Option<i32>,
    /// `0`, `1` or `all`.
    pub acks: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long a batch waits for more records.
    pub linger_ms: u64,
    /// Print `topic<TAB>partition<TAB>offset` of every record once acknowledged.
    pub verbose: bool,
}

/// Produces every line of the input as one record and waits until all are acknowledged.
pub async fn run(brokers: &str, o: ProduceOptions) -> Result<()> {
    let acks: Acks = o
        .acks
        .parse()
        .map_err(|_| format!("--acks {:?}: expected 0, 1 or all", o.acks))?;
    let compression = parse_compression(&o.compression).map_err(|_| {
        format!(
            "--compression {:?}: expected none, gzip, snappy, lz4 or zstd",
            o.compression
        )
    })?;
    let headers: Vec<(String, Bytes)> = o
        .headers
        .iter()
        .map(|h| parse_key_value("--header", h).map(|(k, v)| (k, Bytes::from(v))))
        .collect::<Result<_>>()?;
    let separator: Option<Vec<u8>> = match o.key_separator.as_deref() {
        Some("") => return Err("--key-separator must not be empty".into()),
        Some("\\t") => Some(b"\t".to_vec()),
        Some(s) => Some(s.as_bytes().to_vec()),
        None => None,
    };
    let mut input: Box<dyn AsyncBufRead + Unpin + Send> = match &o.file {
        Some(path) => Box::new(BufReader::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("--file {}: {e}", path.display()))?,
        )),
        None => Box::new(BufReader::new(tokio::io::stdin())),
    };

    // Tells an unknown topic (which the producer would wait `max.block.ms` for) from one that
    // exists, and an unreachable cluster, before reading any input.
    let admin = Admin::connect(brokers).await.map_err(msg)?;
    let exists = match admin.describe_topic(&o.topic).await {
        Ok(_) => true,
        Err(Error::UnknownTopic(_)) => false,
        Err(e) => return Err(msg(e)),
    };
    if !exists && auto_creates(&admin).await == Some(false) {
        return Err(format!(
            "unknown topic {} (the cluster does not create topics on use; see strom topic create)",
            o.topic
        ));
    }
    drop(admin);
    let config = ProducerConfig::new(brokers)
        .acks(acks)
        // Idempotence needs acks=all; with 0 or 1 the user chose speed over it.
        .idempotence(acks == Acks::All)
        .compression(compression)
        .linger(Duration::from_millis(o.linger_ms));
    let producer = Producer::new(config).await.map_err(msg)?;

    let mut out = Out::new();
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut failure: Option<(u64, String)> = None;
    let mut failed = 0u64;
    let mut sent = 0u64;
    let mut line_no = 0u64;
    let mut line = Vec::new();
    let interrupt = super::interrupted();
    tokio::pin!(interrupt);
    loop {
        line.clear();
        let n = tokio::select! {
            r = input.read_until(b'\n', &mut line) => r.map_err(|e| format!("reading input: {e}"))?,
            // Ctrl-C ends the input: what was read so far is still delivered.
            _ = &mut interrupt => 0,
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let mut record = match &separator {
            Some(sep) => match find(&line, sep) {
                Some(i) => ProducerRecord::new(&o.topic, line[i + sep.len()..].to_vec())
                    .key(line[..i].to_vec()),
                None => {
                    failure = Some((
                        line_no,
                        format!(
                            "no key separator {:?} in the line",
                            o.key_separator.as_deref().unwrap_or_default()
                        ),
                    ));
                    failed += 1;
                    break;
                }
            },
            None => ProducerRecord::new(&o.topic, line.clone()),
        };
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        if let Some(p) = o.partition {
            record = record.partition(p);
        }
        let send = producer.send(record);
        let sent_result = if !exists && sent == 0 {
            tokio::time::timeout(AUTO_CREATE_WAIT, send)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Usage(format!(
                        "unknown topic {} (the cluster did not create it within {AUTO_CREATE_WAIT:?})",
                        o.topic
                    )))
                })
        } else {
            send.await
        };
        match sent_result {
            Ok(f) => pending.push_back((line_no, f)),
            Err(e) => {
                failure = Some((line_no, msg(e)));
                failed += 1;
                break;
            }
        }
        sent += 1;
        // Report what is already acknowledged, in input order, without waiting.
        while let Some((n, f)) = pending.front_mut() {
            let n = *n;
            let Some(result) = FutureExt::now_or_never(&mut *f) else {
                break;
            };
            pending.pop_front();
            report(&mut out, o.verbose, n, result, &mut failure, &mut failed)?;
        }
        if failure.is_some() {
            break;
        }
    }
    // EOF (or the first failure): deliver what was sent, then report.
    for (n, f) in pending {
        report(&mut out, o.verbose, n, f.await, &mut failure, &mut failed)?;
    }
    out.flush()?;
    let closed = producer.close().await;
    match failure {
        Some((line, e)) if failed == 1 => Err(format!("line {line}: {e}")),
        Some((line, e)) => Err(format!(
            "{failed} records failed; the first, line {line}: {e}"
        )),
        None => closed.map_err(msg),
    }
}

/// Prints one acknowledgement (with `--verbose`) or records the failure. A closed standard
/// output does not stop the delivery of the rest.
fn report(
    out: &mut Out,
    verbose: bool,
    line: u64,
    result: strom_client::Result<RecordMetadata>,
    failure: &mut Option<(u64, String)>,
    failed: &mut u64,
) -> Result<()> {
    match result {
        Ok(m) => {
            if verbose {
                out.write(format!("{}\t{}\t{}\n", m.topic, m.partition, m.offset).as_bytes())?;
            }
        }
        Err(e) => {
            *failed += 1;
            if failure.is_none() {
                *failure = Some((line, msg(e)));
            }
        }
    }
    Ok(())
}

/// Whether the cluster creates topics on first use (`auto.create.topics.enable` of the
/// controller), when it says.
async fn auto_creates(admin: &Admin) -> Option<bool> {
    /// DescribeConfigs resource type of a broker.
    const BROKER: i8 = 4;
    let c = admin.describe_cluster().await.ok()?;
    let id = if c.controller >= 0 {
        c.controller
    } else {
        c.brokers.first()?.id
    };
    let entries = admin.describe_configs(BROKER, &id.to_string()).await.ok()?;
    let v = entries
        .into_iter()
        .find(|e| e.name == "auto.create.topics.enable")?
        .value?;
    Some(v.trim().eq_ignore_ascii_case("true"))
}

/// Position of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn separator_is_found_first_from_the_left() {
        assert_eq!(find(b"k:v:w", b":"), Some(1));
        assert_eq!(find(b"k::v", b"::"), Some(1));
        assert_eq!(find(b"kv", b":"), None);
        assert_eq!(find(b"", b":"), None);
    }
}
