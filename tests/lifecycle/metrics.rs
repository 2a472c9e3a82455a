//! What an operator's Prometheus (and the Grafana dashboard in deploy/) sees of a scale_out
//! that waits for quota, meets "No valid host" and is retried, next to one that runs out of
//! time: retries and failures by kind and class, nodes by status, the time to ready, the
//! cloud calls by service, the API's requests by route — and no tenant's, cluster's, node's
//! or job's name anywhere.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::api::poll;
use crate::common::{World, request};

/// `/metrics` as a scraper reads it.
async fn scrape(w: &World) -> String {
    let resp = reqwest::get(format!("{}/metrics", w.api.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scale_out_through_a_quota_wait_and_a_no_valid_host_retry_shows_in_metrics() {
    let w = World::start();
    // No room for another server: every new node waits for quota.
    w.quota(json!({"instances": w.servers_used().await})).await;
    let nodes = vec![w.node(1), w.node(2)];
    let fault = w
        .fault(json!({"kind": "no_valid_host", "host": nodes[0]["host"]}))
        .await;
    let id = w.submit_ok(&request(nodes.clone())).await;
    // A job whose deadline passes while its node waits for quota.
    let mut late = request(vec![w.node(3)]);
    late["deadline"] = json!("1s");
    let late = w.submit_ok(&late).await;

    assert_eq!(w.finished(&late).await["state"], "failed");
    // While the project is full, the gauge counts both nodes as waiting for quota.
    let waiting = "capstan_nodes{kind=\"scale_out\",status=\"waiting_for_quota\"}";
    poll(w.polls(600), Duration::from_millis(50), || async {
        (sample(&scrape(&w).await, waiting) == Some(2.0)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{waiting} never 2"));

    w.quota(json!({"instances": 50})).await;
    w.until_event(&id, "a capacity failure", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("capacity"))
    })
    .await;
    w.end_fault(&fault).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    let text = scrape(&w).await;
    // Every backoff the history shows after a capacity failure is one retry, counted once.
    let backoffs = w
        .events(&id)
        .await
        .iter()
        .filter(|e| {
            e["kind"] == "waiting"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("capacity failure"))
        })
        .count();
    assert!(backoffs >= 1, "no capacity backoff in the history");
    let retries = "capstan_retries_total{kind=\"scale_out\",class=\"capacity\"}";
    assert_eq!(sample(&text, retries), Some(backoffs as f64), "{text}");
    let failed = "capstan_node_failures_total{kind=\"scale_out\",class=\"deadline\"}";
    assert_eq!(sample(&text, failed), Some(1.0), "{text}");
    // One observation per node made, and the nodes are all finished.
    let ready = "capstan_node_ready_seconds_count{kind=\"scale_out\"}";
    assert_eq!(sample(&text, ready), Some(nodes.len() as f64), "{text}");
    let succeeded = "capstan_nodes{kind=\"scale_out\",status=\"succeeded\"}";
    assert_eq!(sample(&text, succeeded), Some(2.0), "{text}");
    assert_eq!(sample(&text, waiting), None, "{text}");
    for service in [
        "compute",
        "network",
        "volume",
        "image",
        "identity",
        "kubernetes",
    ] {
        let calls = format!(
            "capstan_cloud_request_duration_seconds_count{{service=\"{service}\",code=\"2xx\"}}"
        );
        assert!(
            sample(&text, &calls).is_some_and(|n| n > 0.0),
            "no {calls}:\n{text}"
        );
    }
    for (route, at_least) in [
        ("method=\"POST\",route=\"/v1/jobs\",status=\"202\"", 2.0),
        ("method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"", 1.0),
        (
            "method=\"GET\",route=\"/v1/jobs/{id}/events\",status=\"200\"",
            1.0,
        ),
        ("method=\"GET\",route=\"/metrics\",status=\"200\"", 1.0),
    ] {
        let requests = format!("capstan_http_request_duration_seconds_count{{{route}}}");
        assert!(
            sample(&text, &requests).is_some_and(|n| n >= at_least),
            "no {requests}:\n{text}"
        );
    }
    for name in [
        "demo-w-01",
        "demo-w-03",
        "default/demo",
        "tenant",
        "alice",
        "acme",
        &id,
        &late,
    ] {
        assert!(!text.contains(name), "/metrics names `{name}`:\n{text}");
    }

    // The dashboard reads only series this scrape has.
    let served: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard = include_str!("../../deploy/grafana/capstan.json");
    let used = dashboard_series(dashboard);
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/capstan.json uses {missing:?}, which /metrics does not serve:\n{text}"
    );
}

/// The `capstan_*` series a Grafana dashboard's queries name (its panels' `expr`s and its
/// variables' queries).
fn dashboard_series(json_text: &str) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if let (Some(q), "expr" | "query" | "definition") = (v.as_str(), k.as_str()) {
                        out.extend(names_in(q));
                    }
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let doc: Value = serde_json::from_str(json_text).expect("the dashboard is JSON");
    let mut out = BTreeSet::new();
    walk(&doc, &mut out);
    out
}

/// `capstan_…` metric names in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("capstan_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
