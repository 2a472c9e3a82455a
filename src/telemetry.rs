//! Log setup: human-readable lines by default, one JSON object per line with `--log-json`.
//! Job work runs inside `job` / `step` spans, so every line carries the job ID and node name.

use tracing_subscriber::EnvFilter;

/// `default` applies when `RUST_LOG` is not set (e.g. `info,sqlx=warn`).
pub fn init(json: bool, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests start several servers in one process) is harmless: keep the first.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
