//! Capstan against real Cluster API: the lab (`lab/up` + `lab/demo`) runs kube-apiserver,
//! etcd, the CAPI v1.12 and CAPO v0.14 managers built from their Go modules, with the
//! simulated OpenStack beside them registering Nodes. The scenarios of the lifecycle suite
//! (tests/common/scenarios.rs: one suite, two clouds) run here against a `capstan serve`
//! pointed at that apiserver, as they run there against a fresh simulator; the differential
//! test compares the two clouds directly.
//!
//! They need a running lab: `CAPSTAN_LAB_DIR` names its state directory (`.ci/run` brings one
//! up). Without it each test says it is skipped and passes. The lab is one shared cloud, so
//! the tests take turns.
//!
//! Not here, simulator only: the leaked-resources scenario (the leak is CAPO's, and real
//! CAPO deletes what it made; see `scenarios::leaked_resources`), and the kill -9 variants
//! of the set delete and the repair (the story's kill -9 runs here; each variant costs
//! minutes of real controllers).

#[path = "../common/mod.rs"]
mod common;
mod differential;
mod real_openstack;
mod schemas;
mod versions;

use std::path::PathBuf;
use std::time::Duration;

use common::{World, scenarios};

/// One test at a time on the one lab.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lab_dir() -> Option<PathBuf> {
    match std::env::var_os("CAPSTAN_LAB_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            println!("skipped: CAPSTAN_LAB_DIR is not set (lab/up and lab/demo bring a lab up)");
            None
        }
    }
}

/// Runs a scenario on the lab, in turn; skipped (passes, saying so) without a lab.
macro_rules! on_the_lab {
    (|$w:ident| $body:expr) => {{
        let Some(dir) = lab_dir() else { return };
        let _turn = TURN.lock().await;
        #[allow(unused_mut)]
        let mut $w = World::lab(dir).await;
        $body.await;
    }};
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_story_ten_workers_wait_for_quota_and_all_run_as_specified() {
    on_the_lab!(|w| scenarios::story(&mut w, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_engine_during_the_story_changes_nothing_of_the_outcome() {
    on_the_lab!(|w| scenarios::story(&mut w, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_volume_type_is_refused_at_submit_and_a_vanished_one_asks_for_input() {
    on_the_lab!(|w| scenarios::volume_types(&w));
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_and_neutron_failing_thirty_percent_of_the_time_only_slow_things_down() {
    // The nodes build in real time while the outage lasts.
    on_the_lab!(|w| scenarios::outage(&w, 0.3, Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_host_on_a_pinned_host_is_retried_as_capacity_until_it_has_room() {
    on_the_lab!(|w| scenarios::no_valid_host(&w));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_two_named_workers_of_a_set_takes_exactly_those() {
    on_the_lab!(|w| scenarios::named_set_delete(&mut w, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_not_ready_node_is_replaced_with_the_same_spec_and_a_healthy_one_left_alone() {
    on_the_lab!(|w| scenarios::repair_not_ready(&mut w, 0));
}
