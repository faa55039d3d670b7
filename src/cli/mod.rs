//! The client commands of the `strom` binary: `topic`, `produce`, `consume`, `group` and
//! `cluster`, built on [`strom_client`] so they work against any Kafka-protocol cluster, and
//! `sql`, a PostgreSQL-protocol client of `strom server`'s SQL listener.
//!
//! Each module has one `run` function taking plain options (the clap definitions live in
//! `main.rs`). Every failure comes back as one line of text, which `main` prints after
//! `strom: ` and turns into a non-zero exit status: the commands never panic on bad input or an
//! unreachable broker.

pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod sql;
pub mod topic;

use std::future::Future;
use std::io::Write;
use std::time::UNIX_EPOCH;

/// What a command returns: `Err` is the one-line message shown to the user.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// Turns a client error into the one-line message (its `Display` is already one line).
pub(crate) fn msg(e: strom_client::Error) -> String {
    e.to_string()
}

/// Runs a command on a small multi-threaded runtime (the client's connection and fetch tasks
/// run beside the command).
pub fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("strom-cli")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?
        .block_on(f)
}

/// Splits `KEY=VALUE` given to `flag` at the first `=`; the key must not be empty.
pub fn parse_key_value(flag: &str, kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{flag} {kv:?}: expected KEY=VALUE")),
    }
}

/// Parses an RFC 3339 time (`2026-01-31T12:00:00Z`, fractions allowed) given to `flag` into
/// milliseconds since the epoch.
pub fn parse_time_ms(flag: &str, s: &str) -> Result<i64> {
    let at = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{flag} {s:?}: {e} (expected e.g. 2026-01-31T12:00:00Z)"))?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{flag} {s:?} is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("{flag} {s:?} is too far in the future"))
}

/// Resolves on Ctrl-C (or SIGTERM on Unix). Create it before the work starts so the signal
/// handlers are installed from then on.
pub(crate) async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Buffered standard output. A reader that went away (`strom consume ... | head`) is not an
/// error: [`Out::write`] then reports `Ok(false)` and the command stops quietly.
pub(crate) struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
}

impl Out {
    pub(crate) fn new() -> Self {
        Out {
            w: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    /// Writes `bytes`; `Ok(false)` when the reader closed the pipe.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<bool> {
        Self::check(self.w.write_all(bytes))
    }

    /// Flushes; `Ok(false)` when the reader closed the pipe.
    pub(crate) fn flush(&mut self) -> Result<bool> {
        Self::check(self.w.flush())
    }

    fn check(r: std::io::Result<()>) -> Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(format!("writing to standard output: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("--config", "a.b=c=d"),
            Ok(("a.b".into(), "c=d".into()))
        );
        assert_eq!(
            parse_key_value("--config", "k="),
            Ok(("k".into(), String::new()))
        );
        assert!(parse_key_value("--config", "novalue")
            .unwrap_err()
            .contains("expected KEY=VALUE"));
        assert!(parse_key_value("--config", "=v").is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            parse_time_ms("--from", "1970-01-01T00:16:40.005Z"),
            Ok(1_000_005)
        );
        assert!(parse_time_ms("--from", "yesterday")
            .unwrap_err()
            .starts_with("--from \"yesterday\""));
    }
}
