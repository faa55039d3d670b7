//! `cargo bench --bench log`: the partition log's append and read throughput beside plain
//! `write()`/`read()` of the same bytes, measured in the same run (the same as
//! `strom bench log`). `STROM_BENCH_MIB` sets the MiB written per measurement (default 512).

fn main() {
    let mib = std::env::var("STROM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512u64);
    let bench = strom::bench::LogBench {
        dir: std::env::temp_dir(),
        total_bytes: mib << 20,
        record_bytes: 1024,
        batch_bytes: 16 * 1024,
        rounds: 5,
    };
    match bench.run() {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
