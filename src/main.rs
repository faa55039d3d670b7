//! The `strom` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Strom: a Kafka-compatible log and stream-processing engine.
#[derive(Debug, Parser)]
#[command(name = "strom", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure throughput against a baseline taken in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append and read throughput of a partition log versus plain write()/read() of a file.
    Log {
        /// Directory to benchmark in (a scratch directory inside it is removed afterwards).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// MiB written per measurement.
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Bytes per record value.
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        /// Approximate bytes per batch.
        #[arg(long, default_value_t = 16 * 1024)]
        batch_bytes: usize,
        /// Rounds per measurement (sides alternate; the median round is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench {
            what:
                BenchCommand::Log {
                    dir,
                    mib,
                    record_bytes,
                    batch_bytes,
                    rounds,
                },
        } => strom::bench::LogBench {
            dir,
            total_bytes: mib << 20,
            record_bytes,
            batch_bytes,
            rounds,
        }
        .run()
        .map(|report| print!("{report}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom: {e}");
            ExitCode::FAILURE
        }
    }
}
