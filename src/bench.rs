//! `strom bench`: throughput measured beside a baseline taken in the same run.
//!
//! `strom bench log` appends 1 KiB records in ~16 KiB batches to a partition log and compares
//! the rate with plain sequential `write()` calls of the same bytes to a file in the same
//! directory; reads are compared with plain `read()` of that file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strom_log::{
    AppendOptions, BatchBuilder, Compression, LogConfig, LogManager, ReadLimit, Record,
};

/// Settings of `strom bench log`.
#[derive(Debug, Clone)]
pub struct LogBench {
    /// Directory to write in (a temporary directory under it is created and removed).
    pub dir: PathBuf,
    /// Bytes to write per measurement.
    pub total_bytes: u64,
    /// Size of one record's value.
    pub record_bytes: usize,
    /// Target batch size.
    pub batch_bytes: usize,
    /// Rounds per measurement; the median round is reported.
    pub rounds: usize,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Bytes moved.
    pub bytes: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl Measurement {
    /// Throughput in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Errors of the benchmark: the log's, or I/O on the baseline file.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] strom_log::Error),
    /// The baseline file failed.
    #[error("baseline I/O on {path}: {source}")]
    Io {
        /// File or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The result of `strom bench log`: pairs of (baseline, strom) measurements.
#[derive(Debug, Clone)]
pub struct LogBenchReport {
    /// (label, baseline, strom) triples.
    pub rows: Vec<(String, Measurement, Measurement)>,
}

impl std::fmt::Display for LogBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<34} {:>14} {:>14} {:>8}",
            "measurement", "baseline MiB/s", "strom MiB/s", "ratio"
        )?;
        for (label, base, strom) in &self.rows {
            writeln!(
                f,
                "{:<34} {:>14.1} {:>14.1} {:>7.2}x",
                label,
                base.mib_per_s(),
                strom.mib_per_s(),
                strom.mib_per_s() / base.mib_per_s()
            )?;
        }
        Ok(())
    }
}

fn make_batches(record_bytes: usize, batch_bytes: usize) -> Result<Vec<Vec<u8>>, BenchError> {
    let per_batch = (batch_bytes / (record_bytes + 16)).max(1);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut batches = Vec::new();
    for b in 0..64 {
        let mut builder = BatchBuilder::new(Compression::None);
        for r in 0..per_batch {
            let value: Vec<u8> = (0..record_bytes)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            builder.push(Record::new(
                Some(format!("key-{b}-{r}")),
                Some(value),
                strom_log::now_ms(),
            ));
        }
        batches.push(builder.build()?);
    }
    Ok(batches)
}

fn baseline_write(
    path: &Path,
    batches: &[Vec<u8>],
    total: u64,
    fsync_every: Option<Duration>,
) -> Result<Measurement, BenchError> {
    let mut f = File::create(path).map_err(io(path))?;
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut written = 0u64;
    let mut i = 0;
    while written < total {
        let b = &batches[i % batches.len()];
        f.write_all(b).map_err(io(path))?;
        written += b.len() as u64;
        i += 1;
        if let Some(every) = fsync_every {
            if last_sync.elapsed() >= every {
                f.sync_data().map_err(io(path))?;
                last_sync = Instant::now();
            }
        }
    }
    Ok(Measurement {
        name: "write()".into(),
        bytes: written,
        elapsed: start.elapsed(),
    })
}

/// Waits until `path` has been written back, so the next measurement starts without a backlog
/// of dirty pages.
fn settle(path: &Path) -> Result<(), BenchError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn baseline_read(path: &Path, chunk: usize) -> Result<Measurement, BenchError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; chunk];
    let start = Instant::now();
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    Ok(Measurement {
        name: "read()".into(),
        bytes: read,
        elapsed: start.elapsed(),
    })
}

fn strom_append(
    dir: &Path,
    batches: &[Vec<u8>],
    total: u64,
    configs: &BTreeMap<String, String>,
) -> Result<(Measurement, LogManager), BenchError> {
    let logs = LogManager::open(dir, LogConfig::default())?;
    logs.create_topic("bench", 1, configs)?;
    let log = logs
        .log("bench", 0)
        .ok_or_else(|| strom_log::Error::Internal("bench topic has no partition 0".into()))?;
    let mut bufs: Vec<Vec<u8>> = batches.to_vec();
    let start = Instant::now();
    let mut written = 0u64;
    let mut i = 0;
    while written < total {
        let n = bufs.len();
        let b = &mut bufs[i % n];
        let opts = AppendOptions {
            origin: strom_log::Origin::Client,
            leader_epoch: 0,
            now_ms: strom_log::now_ms(),
        };
        log.append(b, opts)?;
        written += b.len() as u64;
        i += 1;
    }
    let elapsed = start.elapsed();
    log.set_high_watermark(log.log_end_offset());
    Ok((
        Measurement {
            name: "append".into(),
            bytes: written,
            elapsed,
        },
        logs,
    ))
}

fn strom_read(logs: &LogManager, max_bytes: u64) -> Result<Measurement, BenchError> {
    let log = logs
        .log("bench", 0)
        .ok_or_else(|| strom_log::Error::Internal("bench topic has no partition 0".into()))?;
    let start = Instant::now();
    let mut offset = log.log_start_offset();
    let mut read = 0u64;
    loop {
        let r = log.read(offset, max_bytes, ReadLimit::HighWatermark)?;
        let Some(slice) = &r.records else { break };
        let bytes = slice.read()?;
        read += bytes.len() as u64;
        // The next offset is just past the last batch returned.
        let mut pos = 0;
        let mut next = offset;
        while pos < bytes.len() {
            let h = strom_log::BatchHeader::parse(&bytes[pos..])
                .ok_or_else(|| strom_log::Error::Internal("short batch in a read".into()))?;
            next = h.next_offset();
            pos += h.total_size();
        }
        offset = next;
    }
    Ok(Measurement {
        name: "read".into(),
        bytes: read,
        elapsed: start.elapsed(),
    })
}

impl LogBench {
    /// Runs every measurement and returns the report.
    pub fn run(&self) -> Result<LogBenchReport, BenchError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let work = self.dir.join(format!("strom-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(io(&work))?;
        let result = self.run_in(&work);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn run_in(&self, work: &Path) -> Result<LogBenchReport, BenchError> {
        let batches = make_batches(self.record_bytes, self.batch_bytes)?;
        let warm_file = work.join("warm-up.bin");
        // Warm up the allocator, the page cache and the disk once before measuring.
        baseline_write(&warm_file, &batches, self.total_bytes.min(64 << 20), None)?;
        settle(&warm_file)?;
        let warm = work.join("warm-up");
        let (_, logs) = strom_append(
            &warm,
            &batches,
            self.total_bytes.min(64 << 20),
            &BTreeMap::new(),
        )?;
        logs.close()?;
        drop(logs);

        let mut samples: Vec<Vec<(Measurement, Measurement)>> = vec![Vec::new(); 3];
        let second = Some(Duration::from_secs(1));
        let flush_ms = BTreeMap::from([("flush.ms".to_string(), "1000".to_string())]);
        for round in 0..self.rounds.max(1) {
            // Alternate which side goes first, and let writeback finish before each side, so
            // neither inherits the other's dirty pages.
            let strom_first = round % 2 == 1;
            // Both sides write new files, so both pay for fresh page-cache pages alike.
            let raw = work.join(format!("baseline-{round}.bin"));
            let raw_fsync = work.join(format!("baseline-fsync-{round}.bin"));
            let os_dir = work.join(format!("os-flush-{round}"));
            let fs_dir = work.join(format!("fsync-{round}"));

            let pair = |base: &mut dyn FnMut() -> Result<Measurement, BenchError>,
                        strom: &mut dyn FnMut() -> Result<Measurement, BenchError>|
             -> Result<(Measurement, Measurement), BenchError> {
                if strom_first {
                    let s = strom()?;
                    let b = base()?;
                    Ok((b, s))
                } else {
                    let b = base()?;
                    let s = strom()?;
                    Ok((b, s))
                }
            };

            let mut logs_slot = None;
            let w = pair(
                &mut || {
                    let m = baseline_write(&raw, &batches, self.total_bytes, None)?;
                    settle(&raw)?;
                    Ok(m)
                },
                &mut || {
                    let (m, logs) =
                        strom_append(&os_dir, &batches, self.total_bytes, &BTreeMap::new())?;
                    logs.close()?;
                    logs_slot = Some(logs);
                    Ok(m)
                },
            )?;
            samples[0].push(w);
            let logs = logs_slot
                .take()
                .ok_or_else(|| strom_log::Error::Internal("append produced no log".into()))?;
            let r = pair(&mut || baseline_read(&raw, 1 << 20), &mut || {
                strom_read(&logs, 1 << 20)
            })?;
            samples[1].push(r);
            drop(logs);
            // Directories stay until the end: deleting a gigabyte mid-run (with online discard
            // on some file systems) disturbs the next measurement.

            let s = pair(
                &mut || {
                    let m = baseline_write(&raw_fsync, &batches, self.total_bytes, second)?;
                    settle(&raw_fsync)?;
                    Ok(m)
                },
                &mut || {
                    let (m, logs) = strom_append(&fs_dir, &batches, self.total_bytes, &flush_ms)?;
                    logs.close()?;
                    Ok(m)
                },
            )?;
            samples[2].push(s);
        }
        let labels = [
            "append, OS flush (default)",
            "read, 1 MiB fetches",
            "append, fsync every second",
        ];
        let rows = labels
            .iter()
            .zip(samples)
            .map(|(label, mut runs)| {
                // The median round by ratio.
                runs.sort_by(|a, b| {
                    let ra = a.1.mib_per_s() / a.0.mib_per_s();
                    let rb = b.1.mib_per_s() / b.0.mib_per_s();
                    ra.total_cmp(&rb)
                });
                let (b, s) = runs.swap_remove(runs.len() / 2);
                (label.to_string(), b, s)
            })
            .collect();
        Ok(LogBenchReport { rows })
    }
}
