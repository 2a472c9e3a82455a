//! Prometheus metrics, through `prometheus-client` (the Prometheus project's Rust client):
//! what the engine does (step durations, retries and node failures by kind and class, the
//! time from a job's submission to each node's success, lease takeovers, schedule fires),
//! what it asks of clouds (request durations by service and status class), what the API
//! answers (request durations by method, route template and status), the build, and — read
//! from the store at scrape time — jobs by kind and state and nodes by kind and status.
//!
//! Invariant: no series carries a tenant's name (nor a cluster's or a node's, nor a raw
//! request path): every label is a job kind, a state, a class, a step, a route template or a
//! service, so an open `/metrics` tells a scraper nothing about who uses the server. With a
//! scrape token set (`--metrics-token`), `/metrics` answers only to it.
//!
//! Cloud requests are counted process-wide (`cloud_request`), because the clients that make
//! them are built far from the server that owns a [`Metrics`]; each [`Metrics`] registers
//! that one family, so every server in the process shows it.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Secret;
use crate::model::FailureClass;

/// The content type of [`Metrics::render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds: a step, a cloud call or an API request (1 ms to a minute).
const SHORT: [f64; 10] = [0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
/// Seconds from a job's submission to a node's success (a second to six hours, the default
/// scale_out deadline).
const TO_READY: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn short() -> Histogram {
    Histogram::new(SHORT)
}

fn to_ready() -> Histogram {
    Histogram::new(TO_READY)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindStep {
    kind: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindClass {
    kind: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindState {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindStatus {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudCall {
    service: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpCall {
    method: &'static str,
    route: String,
    status: u16,
}

/// A cloud service Capstan calls, as its `service` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudService {
    Compute,
    Network,
    Volume,
    Image,
    Identity,
    Kubernetes,
}

impl CloudService {
    fn label(self) -> &'static str {
        match self {
            CloudService::Compute => "compute",
            CloudService::Network => "network",
            CloudService::Volume => "volume",
            CloudService::Image => "image",
            CloudService::Identity => "identity",
            CloudService::Kubernetes => "kubernetes",
        }
    }
}

/// A cloud call's answer as its `code` label: the HTTP status class, or `no_answer` (timed
/// out, refused, cut off).
pub fn code_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "no_answer",
    }
}

static CLOUD_REQUESTS: LazyLock<Histograms<CloudCall>> =
    LazyLock::new(|| Family::new_with_constructor(short));

/// Records one call to a cloud service: how long it took and how it was answered (see
/// [`code_class`]).
pub fn cloud_request(service: CloudService, code: &'static str, took: Duration) {
    CLOUD_REQUESTS
        .get_or_create(&CloudCall {
            service: service.label(),
            code,
        })
        .observe(took.as_secs_f64());
}

/// One server's metrics and who may read them.
pub struct Metrics {
    registry: Registry,
    steps: Histograms<KindStep>,
    retries: Family<KindClass, Counter>,
    node_failures: Family<KindClass, Counter>,
    node_ready: Histograms<Kind>,
    pub lease_takeovers: Counter,
    pub schedule_fires: Counter,
    schedule_refusals: Family<Reason, Counter>,
    http: Histograms<HttpCall>,
    /// The bearer token a scrape must present; `None`: open.
    scrape_token: Option<Secret>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::with_scrape_token(None)
    }
}

impl Metrics {
    /// Metrics whose scrapes must present `token` as `Authorization: Bearer <token>`.
    pub fn with_scrape_token(token: Option<Secret>) -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("capstan"),
            steps: Family::new_with_constructor(short),
            retries: Family::default(),
            node_failures: Family::default(),
            node_ready: Family::new_with_constructor(to_ready),
            lease_takeovers: Counter::default(),
            schedule_fires: Counter::default(),
            schedule_refusals: Family::default(),
            http: Family::new_with_constructor(short),
            scrape_token: token,
        };
        let mut r = m.registry;
        r.register(
            "step_duration_seconds",
            "Time a step took, by job kind and step",
            m.steps.clone(),
        );
        r.register(
            "retries",
            "Failed attempts that are tried again after a backoff (the engine's retry of a step \
             error, or a step's own backoff such as scale_out's cleanup before the next \
             attempt), by job kind and failure class",
            m.retries.clone(),
        );
        r.register(
            "node_failures",
            "Nodes that ended failed, by job kind and failure class",
            m.node_failures.clone(),
        );
        r.register(
            "node_ready_seconds",
            "Time from a job's submission to each of its nodes succeeding (for scale_out: the \
             server runs and its Node joined Ready), by job kind",
            m.node_ready.clone(),
        );
        r.register(
            "lease_takeovers",
            "Jobs taken over after another worker's lease lapsed",
            m.lease_takeovers.clone(),
        );
        r.register(
            "schedule_fires",
            "Jobs enqueued by schedules",
            m.schedule_fires.clone(),
        );
        r.register(
            "schedule_refusals",
            "Schedule ticks that made no job, by reason",
            m.schedule_refusals.clone(),
        );
        r.register(
            "cloud_request_duration_seconds",
            "Calls to cloud services (OpenStack's and the Kubernetes API servers), by service and \
             status class (no_answer: none came)",
            CLOUD_REQUESTS.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Requests to Capstan's API, by method, route template and status",
            m.http.clone(),
        );
        let mut build = vec![("version", env!("CARGO_PKG_VERSION"))];
        if let Some(sha) = option_env!("CAPSTAN_GIT_SHA") {
            build.push(("git_sha", sha));
        }
        r.register(
            "build",
            "The running build (its version, and the git commit when built with \
             CAPSTAN_GIT_SHA)",
            Info::new(build),
        );
        Metrics { registry: r, ..m }
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
        self.steps
            .get_or_create(&KindStep {
                kind: kind.to_string(),
                step: step.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A failed attempt of a `kind` job's node that will be tried again after a backoff.
    pub fn retried(&self, kind: &str, class: FailureClass) {
        self.retries
            .get_or_create(&KindClass {
                kind: kind.to_string(),
                class: class.as_str(),
            })
            .inc();
    }

    /// A node of a `kind` job ended failed (`unclassified`: by a workflow's end state
    /// reached with no failure named).
    pub fn node_failed(&self, kind: &str, class: Option<FailureClass>) {
        self.node_failures
            .get_or_create(&KindClass {
                kind: kind.to_string(),
                class: class.map_or("unclassified", FailureClass::as_str),
            })
            .inc();
    }

    /// A node of a `kind` job succeeded `since_submit` after its job was submitted.
    pub fn node_ready(&self, kind: &str, since_submit: Duration) {
        self.node_ready
            .get_or_create(&Kind {
                kind: kind.to_string(),
            })
            .observe(since_submit.as_secs_f64());
    }

    /// A schedule tick that made no job (`refused`, `unavailable`, `owner_gone`).
    pub fn schedule_refused(&self, reason: &'static str) {
        self.schedule_refusals
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// An API request: its method, the route template it matched (never the raw path, which
    /// names tenants' clusters and jobs), its status and how long the answer took.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        // Only the methods the API serves get their own series: a client's invented method
        // must not mint new ones.
        let method = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"]
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        self.http
            .get_or_create(&HttpCall {
                method,
                route: route.to_string(),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition (OpenMetrics, [`CONTENT_TYPE`]); `jobs` are `(kind, state,
    /// count)`, `nodes` `(kind, status, count)`, both read from the store for this scrape.
    pub fn render(
        &self,
        jobs: &[(String, String, i64)],
        nodes: &[(String, String, i64)],
    ) -> String {
        let jobs_family = Family::<KindState, Gauge>::default();
        for (kind, state, n) in jobs {
            jobs_family
                .get_or_create(&KindState {
                    kind: kind.clone(),
                    state: state.clone(),
                })
                .set(*n);
        }
        let nodes_family = Family::<KindStatus, Gauge>::default();
        for (kind, status, n) in nodes {
            nodes_family
                .get_or_create(&KindStatus {
                    kind: kind.clone(),
                    status: status.clone(),
                })
                .set(*n);
        }
        let mut scraped = Registry::with_prefix("capstan");
        scraped.register("jobs", "Jobs by kind and state", jobs_family);
        scraped.register(
            "nodes",
            "Nodes by job kind and status (waiting_for_quota: waiting nodes whose wait is for \
             the project's quota)",
            nodes_family,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scraped);
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an operator's Prometheus reads: counters with `_total`, histograms, the build as
    /// an info metric and the scrape-time gauges, labelled by kind, class, route template,
    /// status and service only; the text ends as OpenMetrics requires.
    #[test]
    fn a_scrape_declares_every_family_and_labels_by_kind_and_class_only() {
        let m = Metrics::default();
        m.retried("scale_out", FailureClass::Capacity);
        m.retried("scale_out", FailureClass::Capacity);
        m.node_failed("scale_out", Some(FailureClass::Deadline));
        m.node_ready("scale_out", Duration::from_secs(42));
        m.http_request("BREW", "/v1/jobs", 405, Duration::from_millis(3));
        m.observe_step("scale_out", "scale_out.quota", Duration::from_millis(20));
        m.schedule_refused("owner_gone");
        cloud_request(CloudService::Volume, code_class(Some(413)), Duration::ZERO);
        let text = m.render(
            &[("scale_out".into(), "running".into(), 1)],
            &[("scale_out".into(), "waiting_for_quota".into(), 3)],
        );
        for line in [
            "capstan_retries_total{kind=\"scale_out\",class=\"capacity\"} 2",
            "capstan_node_failures_total{kind=\"scale_out\",class=\"deadline\"} 1",
            "capstan_node_ready_seconds_count{kind=\"scale_out\"} 1",
            "capstan_node_ready_seconds_bucket{le=\"60.0\",kind=\"scale_out\"} 1",
            "capstan_http_request_duration_seconds_count{method=\"other\",route=\"/v1/jobs\",status=\"405\"} 1",
            "capstan_jobs{kind=\"scale_out\",state=\"running\"} 1",
            "capstan_nodes{kind=\"scale_out\",status=\"waiting_for_quota\"} 3",
            "capstan_step_duration_seconds_count{kind=\"scale_out\",step=\"scale_out.quota\"} 1",
            "capstan_schedule_refusals_total{reason=\"owner_gone\"} 1",
            "capstan_lease_takeovers_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(
            text.contains(
                "capstan_cloud_request_duration_seconds_count{service=\"volume\",code=\"4xx\"}"
            ),
            "{text}"
        );
        let build = format!(
            "capstan_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_cloud_answer_is_labelled_by_its_status_class() {
        for (status, code) in [
            (Some(200), "2xx"),
            (Some(204), "2xx"),
            (Some(404), "4xx"),
            (Some(409), "4xx"),
            (Some(503), "5xx"),
            (None, "no_answer"),
        ] {
            assert_eq!(code_class(status), code, "{status:?}");
        }
    }
}
