//! A job's state, derived from its node tasks inside the writing transaction, so the two
//! never disagree.

use super::sql::{Tx, query};

use super::events::{NewEvent, insert_event};
use super::{Result, StoreError};
use crate::model::{EventKind, JobState, NodeStatus};

/// A job's tasks counted by status: `(status, how many, earliest wake_at)`, one row per
/// status present.
type StatusCounts = [(String, i64, Option<i64>)];

/// Re-derives a job's state and next wake-up from its tasks, inside the caller's transaction,
/// and records a `job_state` event when the state changes.
pub(super) async fn derive_job_state(tx: &mut Tx, job_id: &str, now: i64) -> Result<JobState> {
    let (old, cancel_requested, deadline_at): (String, bool, Option<i64>) =
        query("SELECT state, cancel_requested, deadline_at FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
    let old: JobState = old.parse().map_err(StoreError::Conflict)?;
    let counts: Vec<(String, i64, Option<i64>)> = query(
        "SELECT status, COUNT(*), MIN(wake_at) FROM node_tasks WHERE job_id = ? GROUP BY status",
    )
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    let (state, next_run_at) = derive(old, cancel_requested, deadline_at, &counts, now);
    query(
        "UPDATE jobs SET state = ?, next_run_at = ?, updated_at = ?, \
           finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE NULL END \
         WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(next_run_at)
    .bind(now)
    .bind(state.is_terminal())
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    if state != old {
        let summary = counts
            .iter()
            .map(|(s, n, _)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        let e = NewEvent::new(EventKind::JobState)
            .transition(old.as_str(), state.as_str())
            .message(format!("job {state}: nodes {summary}"));
        insert_event(tx, job_id, now, &e).await?;
    }
    Ok(state)
}

/// The job's state and when it should next run, from its state so far, whether cancel was
/// asked, its deadline and its tasks counted by status.
fn derive(
    old: JobState,
    cancel_requested: bool,
    deadline_at: Option<i64>,
    counts: &StatusCounts,
    now: i64,
) -> (JobState, Option<i64>) {
    let count = |s: NodeStatus| {
        counts
            .iter()
            .filter(|(st, _, _)| st == s.as_str())
            .map(|(_, n, _)| *n)
            .sum::<i64>()
    };
    let total: i64 = counts.iter().map(|(_, n, _)| n).sum();
    let terminal =
        count(NodeStatus::Succeeded) + count(NodeStatus::Failed) + count(NodeStatus::Cancelled);
    let runnable_wake = counts
        .iter()
        .filter(|(s, _, _)| {
            s.parse::<NodeStatus>()
                .map(|s| s.is_runnable())
                .unwrap_or(false)
        })
        .filter_map(|(_, _, w)| *w)
        .min();
    // Once running, a job never reads as queued again (a crash can leave every task pending).
    let started = old != JobState::Queued || total - count(NodeStatus::Pending) > 0;
    let state = if terminal == total {
        // A cancel that came too late to stop anything does not hide the nodes' results.
        if count(NodeStatus::Cancelled) > 0 {
            JobState::Cancelled
        } else if count(NodeStatus::Failed) > 0 {
            JobState::Failed
        } else {
            JobState::Succeeded
        }
    } else if cancel_requested {
        JobState::Cancelling
    } else if runnable_wake.is_none() && count(NodeStatus::NeedsInput) > 0 {
        JobState::NeedsInput
    } else if started {
        JobState::Running
    } else {
        JobState::Queued
    };
    let next_run_at = if state.is_terminal() {
        None
    } else if cancel_requested {
        Some(now)
    } else {
        // Nodes waiting for input still have the job's deadline to meet.
        runnable_wake.or(deadline_at)
    };
    (state, next_run_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState as J;
    use NodeStatus as N;

    const NOW: i64 = 1_000;
    const DEADLINE: i64 = 9_000;

    /// One row of the table: the job before, cancel asked, its nodes as
    /// `(status, count, earliest wake)` → the state and next run it derives.
    struct Case {
        why: &'static str,
        old: JobState,
        cancel: bool,
        nodes: &'static [(NodeStatus, i64, Option<i64>)],
        state: JobState,
        next_run_at: Option<i64>,
    }

    const CASES: &[Case] = &[
        Case {
            why: "every node succeeded",
            old: J::Running,
            cancel: false,
            nodes: &[(N::Succeeded, 3, None)],
            state: J::Succeeded,
            next_run_at: None,
        },
        Case {
            why: "one failed node fails the finished job",
            old: J::Running,
            cancel: false,
            nodes: &[(N::Succeeded, 2, None), (N::Failed, 1, None)],
            state: J::Failed,
            next_run_at: None,
        },
        Case {
            why: "a cancelled node makes the finished job cancelled, failures or not",
            old: J::Cancelling,
            cancel: true,
            nodes: &[(N::Failed, 1, None), (N::Cancelled, 1, None)],
            state: J::Cancelled,
            next_run_at: None,
        },
        Case {
            why: "a cancel too late to stop anything does not hide the results",
            old: J::Cancelling,
            cancel: true,
            nodes: &[(N::Succeeded, 2, None)],
            state: J::Succeeded,
            next_run_at: None,
        },
        Case {
            why: "cancel asked with nodes unfinished: cancelling, due now",
            old: J::Running,
            cancel: true,
            nodes: &[(N::Succeeded, 1, None), (N::Waiting, 1, Some(5_000))],
            state: J::Cancelling,
            next_run_at: Some(NOW),
        },
        Case {
            why: "only needs_input left: needs_input, woken by the deadline",
            old: J::Running,
            cancel: false,
            nodes: &[(N::Succeeded, 1, None), (N::NeedsInput, 1, None)],
            state: J::NeedsInput,
            next_run_at: Some(DEADLINE),
        },
        Case {
            why: "needs_input beside a runnable node: still running, woken by that node",
            old: J::Running,
            cancel: false,
            nodes: &[(N::NeedsInput, 1, None), (N::Waiting, 1, Some(4_000))],
            state: J::Running,
            next_run_at: Some(4_000),
        },
        Case {
            why: "nothing started yet: queued, due at the earliest pending wake",
            old: J::Queued,
            cancel: false,
            nodes: &[(N::Pending, 2, Some(NOW))],
            state: J::Queued,
            next_run_at: Some(NOW),
        },
        Case {
            why: "a job that ran never reads as queued again, even if every node is pending",
            old: J::Running,
            cancel: false,
            nodes: &[(N::Pending, 2, Some(NOW))],
            state: J::Running,
            next_run_at: Some(NOW),
        },
        Case {
            why: "one node past pending starts the job",
            old: J::Queued,
            cancel: false,
            nodes: &[(N::Pending, 1, Some(NOW)), (N::Blocked, 1, Some(2_000))],
            state: J::Running,
            next_run_at: Some(NOW),
        },
        Case {
            why: "the earliest wake of any runnable status wins",
            old: J::Running,
            cancel: false,
            nodes: &[
                (N::Waiting, 1, Some(7_000)),
                (N::Blocked, 1, Some(3_000)),
                (N::Running, 1, Some(6_000)),
            ],
            state: J::Running,
            next_run_at: Some(3_000),
        },
        Case {
            why: "a node backing off keeps the job running, woken when the backoff ends",
            old: J::Running,
            cancel: false,
            nodes: &[(N::Succeeded, 1, None), (N::BackingOff, 1, Some(6_000))],
            state: J::Running,
            next_run_at: Some(6_000),
        },
        Case {
            why: "a backoff ending before a wait wakes the job first",
            old: J::Running,
            cancel: false,
            nodes: &[
                (N::Waiting, 1, Some(7_000)),
                (N::BackingOff, 1, Some(2_500)),
            ],
            state: J::Running,
            next_run_at: Some(2_500),
        },
        Case {
            why: "needs_input beside a node backing off: still running, woken by the backoff",
            old: J::Running,
            cancel: false,
            nodes: &[(N::NeedsInput, 1, None), (N::BackingOff, 1, Some(4_000))],
            state: J::Running,
            next_run_at: Some(4_000),
        },
        Case {
            why: "cancel asked while a node backs off: cancelling, due now",
            old: J::Running,
            cancel: true,
            nodes: &[(N::BackingOff, 2, Some(5_000))],
            state: J::Cancelling,
            next_run_at: Some(NOW),
        },
    ];

    /// What the deadline changes: nothing for a finished job or a cancel; for a job whose
    /// nodes wait only for input, whether it is woken at all.
    #[test]
    fn the_deadline_wakes_only_a_job_with_nothing_else_to_wake_it() {
        // (why, job before, cancel asked, nodes, deadline → state, next run)
        #[allow(clippy::type_complexity)]
        let rows: &[(
            &str,
            JobState,
            bool,
            &[(NodeStatus, i64, Option<i64>)],
            Option<i64>,
            (JobState, Option<i64>),
        )] = &[
            (
                "needs_input without a deadline sleeps until an operator acts",
                J::Running,
                false,
                &[(N::NeedsInput, 2, None)],
                None,
                (J::NeedsInput, None),
            ),
            (
                "needs_input with a deadline is woken by it",
                J::Running,
                false,
                &[(N::NeedsInput, 2, None)],
                Some(DEADLINE),
                (J::NeedsInput, Some(DEADLINE)),
            ),
            (
                "a runnable node's wake wins over the deadline",
                J::Running,
                false,
                &[(N::Waiting, 1, Some(DEADLINE + 1))],
                Some(DEADLINE),
                (J::Running, Some(DEADLINE + 1)),
            ),
            (
                "a finished job is not woken by its deadline",
                J::Running,
                false,
                &[(N::Succeeded, 1, None)],
                Some(DEADLINE),
                (J::Succeeded, None),
            ),
            (
                "a cancel asked while queued: cancelling, due now, deadline or not",
                J::Queued,
                true,
                &[(N::Pending, 3, Some(DEADLINE))],
                None,
                (J::Cancelling, Some(NOW)),
            ),
            (
                "a queued job whose pending nodes have no wake is woken by the deadline",
                J::Queued,
                false,
                &[(N::Pending, 1, None)],
                Some(DEADLINE),
                (J::Queued, Some(DEADLINE)),
            ),
        ];
        for (why, old, cancel, nodes, deadline, want) in rows {
            let counts: Vec<(String, i64, Option<i64>)> = nodes
                .iter()
                .map(|(s, n, w)| (s.as_str().to_string(), *n, *w))
                .collect();
            assert_eq!(
                derive(*old, *cancel, *deadline, &counts, NOW),
                *want,
                "{why}"
            );
        }
    }

    #[test]
    fn a_jobs_state_follows_from_its_nodes() {
        for c in CASES {
            let counts: Vec<(String, i64, Option<i64>)> = c
                .nodes
                .iter()
                .map(|(s, n, w)| (s.as_str().to_string(), *n, *w))
                .collect();
            assert_eq!(
                derive(c.old, c.cancel, Some(DEADLINE), &counts, NOW),
                (c.state, c.next_run_at),
                "{}",
                c.why
            );
        }
    }
}
