//! A standalone OpenAI-compatible mock upstream for tests and benchmarks.
//!
//! Run with `cargo run -p nexus --features testing --bin nexus-mock-upstream -- [--listen 127.0.0.1:0]`.
//! Prints its base URL as the first line on stdout, then serves until killed.

use std::io::Write;

fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            "-h" | "--help" => {
                eprintln!("usage: nexus-mock-upstream [--listen 127.0.0.1:0]");
                return;
            }
            other => {
                eprintln!("unknown argument: {other}");
                std::process::exit(2);
            }
        }
    }
    let threads = std::env::var("MOCK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let mock = match nexus::testing::MockUpstream::start_on(&listen).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", mock.base_url());
        let _ = out.flush();
        std::future::pending::<()>().await;
    });
}
