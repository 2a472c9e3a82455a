//! The harness every test binary shares, written once:
//! - `process`: the processes a test starts (`capstan serve`, `capstan sim`, the test binary
//!   as a server), each waited for until it says where it listens and killed when dropped;
//! - `api`: Capstan's HTTP API and the bounded polling the tests wait with;
//! - `console`: the simulator's console (ground truth, faults, quotas);
//! - `fixtures`: tokens, tenants and the demo cluster's workers;
//! - `db`: the engine's database of a test, a SQLite file or (`CAPSTAN_TEST_STORE=postgres`)
//!   a fresh PostgreSQL database, and a direct reader of it;
//! - `World`: one harness, two clouds — a `capstan serve` driven over its HTTP API against
//!   either a fresh simulator (`capstan sim`: its own Kubernetes side, CAPI and CAPO) or the
//!   lab (`lab/up` + `lab/demo`: real kube-apiserver, CAPI v1.12 and CAPO v0.14, with the
//!   simulated OpenStack beside them). Both clouds have the simulator's console for ground
//!   truth and faults, so a scenario (`scenarios.rs`) is written once and run on each; where
//!   the clouds differ the World says so, in one place.
//!
//! Included by each test binary with `#[path]`; each uses part of it.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod console;
pub mod db;
pub mod fixtures;
pub mod process;
pub mod scenarios;
mod world;

pub use fixtures::{ADA, ALICE, BOB, DANA, EVE, TENANTS, TOKEN, by_name, name_of, node, request};
pub use world::{Cloud, World, assert_exactly_as_specified, counts};
