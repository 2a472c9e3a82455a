//! Prometheus metrics: jobs by kind and state (read from the store at scrape time), step
//! durations, retries by failure class, lease takeovers and schedule fires.
//!
//! Invariant: no series carries a tenant's name (nor a cluster's or a node's): counts are
//! summed over tenants, so an open `/metrics` tells a scraper nothing about who uses the
//! server. With a scrape token set (`--metrics-token`), `/metrics` answers only to it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Secret;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with one label.
#[derive(Default)]
pub struct LabeledCounter(Mutex<BTreeMap<String, u64>>);

impl LabeledCounter {
    pub fn inc(&self, label: &str) {
        *self.0.lock().unwrap().entry(label.to_string()).or_default() += 1;
    }
}

const BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    pub retries: LabeledCounter,
    pub lease_takeovers: Counter,
    pub schedule_fires: Counter,
    /// Ticks that made no job, by why (`refused`, `unavailable`, `owner_gone`).
    pub schedule_refusals: LabeledCounter,
    steps: Mutex<BTreeMap<(String, String), Histogram>>,
    /// The bearer token a scrape must present; `None`: open.
    scrape_token: Option<Secret>,
}

impl Metrics {
    /// Metrics whose scrapes must present `token` as `Authorization: Bearer <token>`.
    pub fn with_scrape_token(token: Option<Secret>) -> Metrics {
        Metrics {
            scrape_token: token,
            ..Metrics::default()
        }
    }

    /// Whether a scrape with this `Authorization` header value may read the metrics.
    pub fn may_scrape(&self, authorization: Option<&str>) -> bool {
        match &self.scrape_token {
            None => true,
            Some(token) => authorization
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|presented| token.matches(presented.trim())),
        }
    }

    pub fn observe_step(&self, kind: &str, step: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut steps = self.steps.lock().unwrap();
        let h = steps
            .entry((kind.to_string(), step.to_string()))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Renders the text exposition format; `jobs` are `(kind, state, count)`.
    pub fn render(&self, jobs: &[(String, String, i64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP capstan_jobs Jobs by kind and state.\n# TYPE capstan_jobs gauge\n");
        for (kind, state, n) in jobs {
            let _ = writeln!(out, "capstan_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}");
        }
        out.push_str("# HELP capstan_step_duration_seconds Time a step took, by job kind and step.\n# TYPE capstan_step_duration_seconds histogram\n");
        for ((kind, step), h) in self.steps.lock().unwrap().iter() {
            let labels = format!("kind=\"{kind}\",step=\"{step}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "capstan_step_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "capstan_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "capstan_step_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "capstan_step_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP capstan_retries_total Failed attempts that were retried, by failure class.\n# TYPE capstan_retries_total counter\n");
        for (class, n) in self.retries.0.lock().unwrap().iter() {
            let _ = writeln!(out, "capstan_retries_total{{class=\"{class}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP capstan_lease_takeovers_total Jobs taken over after another worker's lease lapsed.\n# TYPE capstan_lease_takeovers_total counter\ncapstan_lease_takeovers_total {}",
            self.lease_takeovers.get()
        );
        let _ = writeln!(
            out,
            "# HELP capstan_schedule_fires_total Jobs enqueued by schedules.\n# TYPE capstan_schedule_fires_total counter\ncapstan_schedule_fires_total {}",
            self.schedule_fires.get()
        );
        let _ = writeln!(
            out,
            "# HELP capstan_schedule_refusals_total Schedule ticks that made no job, by reason.\n# TYPE capstan_schedule_refusals_total counter"
        );
        for (reason, n) in self.schedule_refusals.0.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "capstan_schedule_refusals_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}
