//! The Parquet sink: rows written to files in a directory, partitioned by time and rolled by
//! size and age.
//!
//! A file is written as `<dir>/date=YYYY-MM-DD/hour=HH/part-<query>-<ms>.parquet.inprogress`
//! and renamed without the suffix when it is closed, so a reader never sees half a file. The
//! query commits its input offsets only when the file holding their rows is closed: after a
//! crash the open file is abandoned (left `.inprogress`) and its rows are written again.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use crate::{Result, SqlError};

/// Where and how often to write.
#[derive(Debug, Clone)]
pub struct ParquetSpec {
    /// The directory.
    pub dir: PathBuf,
    /// Close a file after this many rows.
    pub roll_rows: usize,
    /// Close a file this long after it was opened.
    pub roll_after: Duration,
}

impl ParquetSpec {
    /// From `path` and the `roll_rows` / `roll_seconds` options.
    pub fn from_options(path: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<ParquetSpec> {
        let num = |k: &str, d: u64| -> Result<u64> {
            match get(k) {
                Some(v) => v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    SqlError::Statement(format!("{k}='{v}' must be a positive number"))
                }),
                None => Ok(d),
            }
        };
        let dir = PathBuf::from(path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| SqlError::Statement(format!("path '{path}': {e}")))?;
        Ok(ParquetSpec {
            dir,
            roll_rows: num("roll_rows", 1_000_000)? as usize,
            roll_after: Duration::from_secs(num("roll_seconds", 60)?),
        })
    }
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    opened: Instant,
    rows: usize,
}

/// Writes Parquet files for one query.
pub struct ParquetSink {
    spec: ParquetSpec,
    query: String,
    open: Option<OpenFile>,
    seq: u64,
}

impl ParquetSink {
    /// A sink for `query`.
    pub fn new(spec: ParquetSpec, query: &str) -> Self {
        ParquetSink {
            spec,
            query: query.to_string(),
            open: None,
            seq: 0,
        }
    }

    /// Appends rows, rolling the file when it is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let (date, hour) = civil(now);
            let dir = self
                .spec
                .dir
                .join(format!("date={date}"))
                .join(format!("hour={hour:02}"));
            std::fs::create_dir_all(&dir)?;
            self.seq += 1;
            let name = format!("part-{}-{}-{}.parquet", self.query, now, self.seq);
            let path = dir.join(&name);
            let tmp = dir.join(format!("{name}.inprogress"));
            let writer = ArrowWriter::try_new(File::create(&tmp)?, batch.schema(), None)
                .map_err(|e| SqlError::DataFusion(e.to_string()))?;
            self.open = Some(OpenFile {
                writer,
                tmp,
                path,
                opened: Instant::now(),
                rows: 0,
            });
        }
        if let Some(f) = &mut self.open {
            f.writer
                .write(batch)
                .map_err(|e| SqlError::DataFusion(e.to_string()))?;
            f.rows += batch.num_rows();
            if f.rows >= self.spec.roll_rows {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(f) = self.open.take() {
            f.writer
                .close()
                .map_err(|e| SqlError::DataFusion(e.to_string()))?;
            std::fs::rename(&f.tmp, &f.path)?;
        }
        Ok(())
    }

    /// Closes the file if it is old enough (or `closing`); `true` when nothing is left open.
    pub fn checkpoint(&mut self, closing: bool) -> Result<bool> {
        let due = self
            .open
            .as_ref()
            .is_some_and(|f| f.opened.elapsed() >= self.spec.roll_after);
        if closing || due {
            self.close()?;
        }
        Ok(self.open.is_none())
    }
}

/// `(YYYY-MM-DD, hour)` of a UTC millisecond time.
fn civil(ms: i64) -> (String, i64) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3600;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (format!("{y:04}-{m:02}-{d:02}"), hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), ("1970-01-01".into(), 0));
        assert_eq!(civil(1_764_000_000_000), ("2025-11-24".into(), 16));
    }
}
