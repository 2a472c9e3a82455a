//! The lifecycle job kinds end to end on the simulator, one module per kind (scale_out,
//! delete_nodes, repair, the sweeps) plus what cuts across them (preflight, tenancy, metrics):
//! `capstan sim` and `capstan serve` run as separate processes and meet only over loopback
//! HTTP, as in production. The scenarios shared with the lab suite (tests/common/scenarios.rs: one
//! suite, two clouds) run here on a fresh simulator each; the tests written here use what
//! only the simulator has (its own Kubernetes side, CAPO faults, tenants). `replicas` is the
//! soak of three replicas on one PostgreSQL database (skipped without `CAPSTAN_TEST_PG`).
//!
//! One binary rather than one per kind: each test binary links the whole crate again.

mod catalog;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod delete;
mod metrics;
mod portal;
mod preflight;
mod repair;
mod replicas;
mod scale_out;
mod sweep;
mod tenancy;

/// The fields a 422 names, in its order.
fn refused_fields(body: &serde_json::Value) -> Vec<&str> {
    body["fields"]
        .as_array()
        .expect("a 422 lists its fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect()
}
