//! Engine tests through its public surfaces: a real `capstan serve` process (with steps these
//! tests register), its HTTP API, and the side effects its steps leave in a side database.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod crash;
mod store;
mod support;
mod surfaces;

use std::time::Duration;

use capstan::serve::{ServeOptions, serve};

/// The entry point of the `capstan serve` child processes the tests start (the test binary
/// re-executes itself with `--include-ignored` to reach it). Ignored in normal runs: it is a
/// process entry, not a test.
#[test]
#[ignore = "process entry point for the server children of the other tests"]
fn child_server_entry() {
    if std::env::var("CAPSTAN_TEST_CHILD").as_deref() != Ok("1") {
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        capstan::telemetry::init(false, "info,sqlx=warn");
        let listen = std::env::var("CAPSTAN_TEST_LISTEN").unwrap_or("127.0.0.1:0".into());
        let mut opts = ServeOptions::new(
            listen.parse().unwrap(),
            capstan::store::DbLocation::parse(&env("CAPSTAN_TEST_DB")).unwrap(),
        );
        opts.workflows = Some(support::workflows_dir());
        opts.admin_token = Some(capstan::config::Secret::new(env("CAPSTAN_ADMIN_TOKEN")));
        opts.config = std::env::var("CAPSTAN_TEST_CONFIG").ok().map(Into::into);
        opts.lease = capstan::duration::parse(&env("CAPSTAN_TEST_LEASE")).unwrap();
        opts.poll = capstan::duration::parse(&env("CAPSTAN_TEST_POLL")).unwrap();
        if let Ok(n) = std::env::var("CAPSTAN_TEST_MAX_JOBS") {
            opts.max_jobs = n.parse().unwrap();
        }
        // The engine tests fire schedules every second.
        opts.schedule_min_interval = Duration::from_secs(1);
        if let Err(e) = serve(opts, support::test_registry()).await {
            eprintln!("capstan: {e:#}");
            std::process::exit(1);
        }
    });
}
