//! Runs one claimed job: launches its due node tasks (up to the job's concurrency), applies
//! each step's outcome through the workflow, keeps the lease by heartbeat, and releases the
//! job when nothing is due soon.
//!
//! Invariant: every change this runner makes goes through a fenced store write. If the lease
//! is lost (another worker claimed the job after this one stalled), the first refused write
//! stops the runner; the newer worker's progress is never overwritten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Inner;
use super::retry::RetryDecision;
use super::step::{Outcome, Recorded, StepContext, StepError};
use super::workflow::{Action, EXHAUSTED, State, Workflow};
use crate::model::{EventKind, FailureClass, JobState, NodeStatus};
use crate::store::{Claim, JobRow, NewEvent, StoreError, TaskRow, TaskUpdate, now_ms};

/// A job with nothing due within this window gives its lease back rather than hold it idle.
const HOLD_IDLE: Duration = Duration::from_secs(2);
/// How long a job whose kind this binary does not know is left alone before a look again.
const UNKNOWN_KIND_RETRY: Duration = Duration::from_secs(60);
/// How often a node blocked by another job's lock looks again.
const BLOCKED_RECHECK: Duration = Duration::from_secs(1);

/// Why a runner stopped before the job finished.
enum Stop {
    LeaseLost,
    Shutdown,
}

pub(super) async fn run(inner: Arc<Inner>, claim: Claim, wake: Arc<Notify>) {
    let span = info_span!("job", job_id = %claim.job.id, kind = %claim.job.kind);
    async move {
        if let Some(prev) = &claim.taken_over_from {
            inner.metrics.lease_takeovers.inc();
            info!(previous = %prev, "took over a job whose lease lapsed");
        }
        let Some(wf) = inner.workflows.get(&claim.job.kind).cloned() else {
            // The binary no longer knows this kind; keep the job and look again later.
            warn!("no workflow for this kind; leaving the job for a binary that has one");
            let later = now_ms() + UNKNOWN_KIND_RETRY.as_millis() as i64;
            let _ = inner
                .store
                .release_until(&claim.job.id, claim.job.fence, Some(later))
                .await;
            return;
        };
        let mut runner = Runner::new(inner.clone(), claim, wf, wake);
        match runner.drive().await {
            Ok(()) => {}
            Err(Stop::LeaseLost) => {
                warn!("lease lost to another worker; stopping without further writes")
            }
            Err(Stop::Shutdown) => info!("shutting down; lease released"),
        }
    }
    .instrument(span)
    .await
}

struct Runner {
    inner: Arc<Inner>,
    job: JobRow,
    fence: i64,
    wf: Arc<Workflow>,
    params: Arc<serde_json::Value>,
    tasks: Vec<TaskRow>,
    inflight: HashSet<String>,
    wake: Arc<Notify>,
    operator_seq: i64,
    cancel: bool,
    /// Until when this runner may trust its lease: the last confirmed claim or heartbeat plus
    /// two thirds of the lease. Past it, nothing new starts and the runner stops, so a
    /// worker whose heartbeats stall cannot re-run a step a newer holder already committed.
    trusted_until: Instant,
}

/// A finished step: its node, result, duration, and the node's external IDs if it recorded any.
type StepResult = (String, Result<Outcome, StepError>, Duration, Option<String>);

impl Runner {
    fn new(inner: Arc<Inner>, claim: Claim, wf: Arc<Workflow>, wake: Arc<Notify>) -> Runner {
        let params = Arc::new(claim.job.params());
        Runner {
            fence: claim.job.fence,
            operator_seq: claim.job.operator_seq,
            cancel: claim.job.cancel_requested,
            job: claim.job,
            tasks: claim.tasks,
            inflight: HashSet::new(),
            params,
            trusted_until: Instant::now() + inner.config.lease * 2 / 3,
            inner,
            wf,
            wake,
        }
    }

    async fn drive(&mut self) -> Result<(), Stop> {
        let mut running: JoinSet<StepResult> = JoinSet::new();
        let heartbeat_every = self.inner.config.lease / 3;
        let mut next_heartbeat = Instant::now() + heartbeat_every;
        let mut shutdown = self.inner.shutdown.clone();
        let mut stopping = false;
        loop {
            if (self.cancel || stopping) && running.is_empty() {
                return self.wind_down().await;
            }
            if !self.cancel && !stopping {
                self.launch_due(&mut running).await?;
            }
            if running.is_empty() && !self.cancel && self.release_if_idle().await? {
                return Ok(());
            }
            let sleep_for = self
                .until_due(stopping, heartbeat_every)
                .min(next_heartbeat.saturating_duration_since(Instant::now()));
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // Steps are never aborted while the runner lives, and panics are caught
                    // inside the task, so a join error cannot carry a node's result.
                    if let Ok(done) = done {
                        self.step_done(done).await?;
                    }
                }
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.wake.notified() => {
                    self.refresh().await?;
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                }
            }
            if Instant::now() >= next_heartbeat {
                match self.heartbeat(heartbeat_every).await {
                    Ok(next) => next_heartbeat = next,
                    Err(stop) => {
                        running.abort_all();
                        return Err(stop);
                    }
                }
            }
            if Instant::now() >= self.trusted_until {
                // Unconfirmed for too long: another worker may hold the job by now.
                running.abort_all();
                return Err(Stop::LeaseLost);
            }
        }
    }

    /// With nothing in flight after a cancel or a shutdown: records the cancel at this safe
    /// point, or just gives the lease back.
    async fn wind_down(&mut self) -> Result<(), Stop> {
        if self.cancel {
            let state = self.lease(
                self.inner
                    .store
                    .finish_cancel(&self.job, self.fence, &self.tasks)
                    .await,
            )?;
            info!(state = %state, "job cancelled at a safe point");
            self.inner
                .store
                .release(&self.job.id, self.fence)
                .await
                .ok();
            return Ok(());
        }
        self.inner
            .store
            .release(&self.job.id, self.fence)
            .await
            .ok();
        Err(Stop::Shutdown)
    }

    /// With no step in flight: gives the lease back when nothing is due soon (or nothing is
    /// runnable at all). True when the runner is done.
    async fn release_if_idle(&mut self) -> Result<bool, Stop> {
        match self.next_due() {
            None => {
                // Nothing runnable: every node is finished (the commit that finished the job
                // released the lease) or needs input.
                if !self.job.state.is_terminal() {
                    self.lease(self.inner.store.release(&self.job.id, self.fence).await)?;
                }
                Ok(true)
            }
            Some(at) if at - now_ms() > HOLD_IDLE.as_millis() as i64 => {
                self.lease(self.inner.store.release(&self.job.id, self.fence).await)?;
                debug!("nothing due soon; lease released until the next wake-up");
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// How long until a due node could start. Due nodes only shorten the sleep when one
    /// could start: not at the concurrency limit, and not while cancelling or stopping (then
    /// only steps finishing matter).
    fn until_due(&self, stopping: bool, otherwise: Duration) -> Duration {
        let can_start =
            !self.cancel && !stopping && self.inflight.len() < self.job.concurrency.max(1) as usize;
        self.next_due()
            .filter(|_| can_start)
            .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
            .unwrap_or(otherwise)
    }

    /// A step finished: keeps what it recorded and applies its outcome.
    async fn step_done(&mut self, (node, result, took, recorded): StepResult) -> Result<(), Stop> {
        self.inflight.remove(&node);
        if let Some(ext) = recorded
            && let Some(t) = self.tasks.iter_mut().find(|t| t.name == node)
        {
            t.external_ids = ext;
        }
        self.apply(&node, result, took).await
    }

    /// Extends the lease and learns of a cancel or an operator's change; returns when to beat
    /// next. A lease another worker took stops the runner; a failed write is tried again soon.
    async fn heartbeat(&mut self, every: Duration) -> Result<Instant, Stop> {
        let sent = Instant::now();
        let hb = self
            .inner
            .store
            .heartbeat(
                &self.job.id,
                self.fence,
                self.inner.config.lease.as_millis() as i64,
            )
            .await;
        match hb {
            Ok(Some(hb)) => {
                self.trusted_until = sent + self.inner.config.lease * 2 / 3;
                if hb.cancel_requested && !self.cancel {
                    info!("cancel requested");
                    self.cancel = true;
                }
                if hb.operator_seq != self.operator_seq {
                    self.refresh().await?;
                }
                Ok(sent + every)
            }
            Ok(None) => Err(Stop::LeaseLost),
            Err(e) => {
                warn!(error = %e, "heartbeat failed; retrying");
                Ok(Instant::now() + Duration::from_millis(200))
            }
        }
    }

    /// Re-reads the job after an operator action: cancel flag and the tasks not in flight.
    async fn refresh(&mut self) -> Result<(), Stop> {
        let Ok(Some(job)) = self.inner.store.job(&self.job.id).await else {
            return Ok(());
        };
        if job.fence != self.fence {
            return Err(Stop::LeaseLost);
        }
        self.cancel = job.cancel_requested;
        self.operator_seq = job.operator_seq;
        if let Ok(fresh) = self.inner.store.reload_tasks(&self.job.id).await {
            for t in fresh {
                if !self.inflight.contains(&t.name)
                    && let Some(slot) = self.tasks.iter_mut().find(|x| x.name == t.name)
                {
                    *slot = t;
                }
            }
        }
        self.job = job;
        Ok(())
    }

    fn next_due(&self) -> Option<i64> {
        self.tasks
            .iter()
            .filter(|t| t.status.is_runnable() && !self.inflight.contains(&t.name))
            .map(|t| t.wake_at.unwrap_or(0))
            .min()
    }

    fn lease<T>(&self, r: Result<T, StoreError>) -> Result<T, Stop> {
        match r {
            Ok(v) => Ok(v),
            Err(StoreError::LeaseLost { .. }) => Err(Stop::LeaseLost),
            Err(e) => {
                // A store error we cannot write through: let the lease lapse so this job is
                // picked up again (here or elsewhere) from its last committed state.
                warn!(error = %e, "store write failed; abandoning the lease");
                Err(Stop::LeaseLost)
            }
        }
    }

    async fn launch_due(&mut self, running: &mut JoinSet<StepResult>) -> Result<(), Stop> {
        let now = now_ms();
        if Instant::now() >= self.trusted_until {
            return Err(Stop::LeaseLost);
        }
        if let Some(deadline) = self.job.deadline_at
            && now >= deadline
        {
            // Past the deadline every unfinished node that is not mid-step fails, including
            // those waiting for operator input.
            let msg = format!(
                "the job's deadline ({}) passed",
                crate::store::rfc3339(deadline)
            );
            let late: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| {
                    !self.tasks[i].status.is_terminal()
                        && !self.inflight.contains(&self.tasks[i].name)
                })
                .collect();
            for i in late {
                self.end_task(i, NodeStatus::Failed, FailureClass::Deadline, msg.clone())
                    .await?;
            }
            return Ok(());
        }
        let concurrency = self.job.concurrency.max(1) as usize;
        let due: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| {
                let t = &self.tasks[i];
                t.status.is_runnable()
                    && !self.inflight.contains(&t.name)
                    && t.wake_at.unwrap_or(0) <= now
            })
            .collect();
        for i in due {
            if self.inflight.len() >= concurrency {
                break;
            }
            let t = &self.tasks[i];
            if matches!(t.status, NodeStatus::Pending | NodeStatus::Blocked) {
                let holder = self.lease(
                    self.inner
                        .store
                        .start_node(&self.job, self.fence, &t.name)
                        .await,
                )?;
                if let Some(holder) = holder {
                    self.block(i, &holder).await?;
                    continue;
                }
                if self.job.state == JobState::Queued {
                    self.job.state = JobState::Running;
                }
            }
            self.spawn_step(i, running);
        }
        Ok(())
    }

    async fn block(&mut self, i: usize, holder: &str) -> Result<(), Stop> {
        let t = &self.tasks[i];
        let reason = format!("waiting for job {holder}, which is acting on this node");
        let mut update = TaskUpdate::from_row(t);
        update.status = NodeStatus::Blocked;
        update.wake_at = Some(now_ms() + BLOCKED_RECHECK.as_millis() as i64);
        let mut events = Vec::new();
        if t.wait_reason.as_deref() != Some(reason.as_str()) {
            info!(node = %t.name, holder, "node held by another job; waiting");
            events.push(
                NewEvent::new(EventKind::Blocked)
                    .node(&t.name)
                    .message(&reason),
            );
        }
        update.wait_reason = Some(reason);
        self.commit(i, update, events).await
    }

    fn spawn_step(&mut self, i: usize, running: &mut JoinSet<StepResult>) {
        let t = &self.tasks[i];
        let state = self.wf.state(&t.state).expect("validated workflow");
        let Action::Step(step) = &state.action else {
            return;
        };
        let (map, unreadable) = match t.progress_record() {
            Ok(map) => (map, None),
            Err(e) => (Default::default(), Some(e)),
        };
        let recorded = Arc::new(std::sync::Mutex::new(Recorded {
            map,
            unreadable,
            dirty: false,
        }));
        let def = self
            .inner
            .registry
            .step_def(step)
            .expect("validated workflow");
        let ctx = StepContext {
            job_id: self.job.id.clone(),
            kind: self.job.kind.clone(),
            tenant: self.job.tenant.clone(),
            cluster: self.job.cluster.clone(),
            params: self.params.clone(),
            node: t.name.clone(),
            spec: t.spec(),
            state: t.state.clone(),
            attempt: t.attempt as u32 + 1,
            external: recorded.clone(),
            store: self.inner.store.clone(),
            fence: self.fence,
        };
        let run = def.run.clone();
        let timeout = state.timeout;
        let node = t.name.clone();
        let step_name = step.clone();
        let span = info_span!("step", node = %node, state = %t.state, step = %step_name);
        self.inflight.insert(node.clone());
        running.spawn(
            async move {
                let started = Instant::now();
                let guarded = std::panic::AssertUnwindSafe(run(ctx)).catch_unwind();
                let result = match tokio::time::timeout(timeout, guarded).await {
                    Ok(Ok(r)) => r,
                    // A panicking step is a bug; count it as a failed attempt, so the retry
                    // budget bounds it, instead of taking the worker down.
                    Ok(Err(panic)) => Err(StepError::new(
                        FailureClass::Transient,
                        format!("step {step_name} panicked: {}", panic_text(&panic)),
                    )),
                    Err(_) => Err(StepError::new(
                        FailureClass::Timeout,
                        format!(
                            "step {step_name} did not finish within {}",
                            crate::duration::format(timeout)
                        ),
                    )),
                };
                let rec = recorded.lock().unwrap();
                let ext = rec
                    .dirty
                    .then(|| serde_json::Value::Object(rec.map.clone()).to_string());
                (node, result, started.elapsed(), ext)
            }
            .instrument(span),
        );
    }

    /// Applies a step's outcome to its node through the workflow and commits it.
    async fn apply(
        &mut self,
        node: &str,
        result: Result<Outcome, StepError>,
        took: Duration,
    ) -> Result<(), Stop> {
        let Some(i) = self.tasks.iter().position(|t| t.name == node) else {
            return Ok(());
        };
        let t = &self.tasks[i];
        let state = self.wf.state(&t.state).expect("validated workflow");
        if let Action::Step(step) = &state.action {
            self.inner.metrics.observe_step(&self.job.kind, step, took);
        }
        // The node's span covers deciding (its log lines), not the commit.
        let span = info_span!("node", node = %t.name);
        match span.in_scope(|| self.decide(i, outcome_of(result))) {
            Applied::Commit(change) => {
                self.commit(i, change.update, change.events).await?;
                if let Some(class) = change.retried {
                    self.inner.metrics.retried(&self.job.kind, class);
                }
                Ok(())
            }
            Applied::Fail {
                class,
                message,
                count_run,
            } => {
                if count_run {
                    self.tasks[i].attempts_total += 1;
                }
                self.end_task(i, NodeStatus::Failed, class, message).await
            }
        }
    }

    /// What an outcome does to node `i` under its current state's transitions and policy.
    fn decide(&self, i: usize, outcome: Outcome) -> Applied {
        let t = &self.tasks[i];
        let state = self.wf.state(&t.state).expect("validated workflow");
        let mut update = TaskUpdate::from_row(t);
        update.attempts_total += 1;
        let mut change = Change {
            update,
            events: Vec::new(),
            now: now_ms(),
            retried: None,
        };
        match outcome {
            Outcome::Next { label, note } => {
                // Validation guarantees declared labels have transitions; an undeclared one
                // is a bug in the step, so fail the node loudly rather than guess.
                let Some(target) = state.on.get(&label) else {
                    return Applied::Fail {
                        class: FailureClass::Internal,
                        message: format!(
                            "step returned undeclared outcome `{label}` in state {}",
                            t.state
                        ),
                        count_run: true,
                    };
                };
                let (class, message) = note.map_or((None, None), |(c, m)| (c, Some(m)));
                self.transition(&mut change, &label, target, class, message);
            }
            Outcome::Wait {
                reason,
                until,
                recheck,
            } => self.wait(&mut change, t, NodeStatus::Waiting, reason, until, recheck),
            Outcome::Backoff {
                class,
                reason,
                until,
            } => {
                // A step that backs off again while backing off (run again early, after a
                // takeover) is still in the same retry.
                if t.status != NodeStatus::BackingOff {
                    change.retried = Some(class);
                }
                self.wait(
                    &mut change,
                    t,
                    NodeStatus::BackingOff,
                    reason,
                    Some(until),
                    Duration::ZERO,
                )
            }
            Outcome::Retry { class, message } => {
                return self.retry(change, t, state, class, message);
            }
            // The step ran: its run counts like every other.
            Outcome::Fail { class, message } => {
                return Applied::Fail {
                    class,
                    message,
                    count_run: true,
                };
            }
            Outcome::NeedsInput { class, reason } => needs_input(&mut change, t, class, reason),
        }
        Applied::Commit(change)
    }

    /// A persisted wait until `until`, or `recheck` from now; never past the job's deadline.
    /// `status` is `waiting` (a nudge may wake it early) or `backing_off` (nothing does).
    fn wait(
        &self,
        change: &mut Change,
        t: &TaskRow,
        status: NodeStatus,
        reason: String,
        until: Option<i64>,
        recheck: Duration,
    ) {
        let mut wake = until.unwrap_or(change.now + recheck.as_millis() as i64);
        if let Some(deadline) = self.job.deadline_at {
            wake = wake.min(deadline);
        }
        change.update.status = status;
        change.update.wake_at = Some(wake);
        if t.wait_reason.as_deref() != Some(reason.as_str()) {
            info!(reason = %reason, "waiting");
            change.events.push(NewEvent::new(EventKind::Waiting).node(&t.name).message(&reason).data(json!({
                "state": t.state, "until": until.map(crate::store::rfc3339), "recheck_ms": recheck.as_millis() as u64,
            })));
        }
        change.update.wait_reason = Some(reason);
    }

    /// A failed attempt under the state's retry policy: back off and run the state again,
    /// or, with the budget spent, take its `exhausted` transition or fail the node. A retry
    /// that would wake past the job's deadline fails the node now.
    fn retry(
        &self,
        mut change: Change,
        t: &TaskRow,
        state: &State,
        class: FailureClass,
        message: String,
    ) -> Applied {
        let failed = (t.attempt + 1) as u32;
        change.update.attempt = failed as i64;
        change.update.failure_class = Some(class);
        change.update.last_error = Some(message.clone());
        let in_state = Duration::from_millis((change.now - t.entered_at).max(0) as u64);
        let delay = match state.retry.decide(failed, in_state) {
            RetryDecision::After(delay) => delay,
            RetryDecision::Exhausted(why) => {
                let message = format!("{message} ({why})");
                let Some(target) = state.on.get(EXHAUSTED) else {
                    return Applied::fail(class, message);
                };
                self.transition(&mut change, EXHAUSTED, target, Some(class), Some(message));
                return Applied::Commit(change);
            }
        };
        let wake = change.now + delay.as_millis() as i64;
        if let Some(deadline) = self.job.deadline_at
            && wake > deadline
        {
            return Applied::fail(
                class,
                format!(
                    "{message} (no retry: the next attempt would pass the job's deadline {})",
                    crate::store::rfc3339(deadline)
                ),
            );
        }
        warn!(class = %class, attempt = failed, error = %message, "attempt failed; retrying");
        change.update.status = NodeStatus::BackingOff;
        change.update.wake_at = Some(wake);
        change.retried = Some(class);
        change.update.wait_reason = Some(format!(
            "retrying {} after {class} failure (attempt {failed})",
            t.state
        ));
        change.events.push(
            NewEvent::new(EventKind::Retry)
                .node(&t.name)
                .attempt(failed as i64)
                .class(Some(class))
                .message(message)
                .data(json!({ "state": t.state, "backoff_ms": delay.as_millis() as u64 })),
        );
        Applied::Commit(change)
    }

    /// Moves the node to `target` on outcome `label`, ending it if `target` is an end state.
    fn transition(
        &self,
        change: &mut Change,
        label: &str,
        target: &str,
        class: Option<FailureClass>,
        message: Option<String>,
    ) {
        let update = &mut change.update;
        let from = update.state.clone();
        let end = match self.wf.state(target).map(|s| &s.action) {
            Some(Action::End(status)) => Some(*status),
            _ => None,
        };
        update.state = target.to_string();
        update.attempt = 0;
        update.entered_at = change.now;
        update.wait_reason = None;
        match end {
            Some(status) => {
                update.status = status;
                update.wake_at = None;
                if status == NodeStatus::Failed {
                    update.failure_class = class;
                    update.last_error = message.clone();
                }
            }
            None => {
                update.status = NodeStatus::Running;
                update.wake_at = Some(change.now);
            }
        }
        info!(from = %from, to = %target, outcome = label, "transition");
        let mut e = NewEvent::new(EventKind::Transition)
            .node(&update.name)
            .transition(&from, target)
            .class(class)
            .data(json!({ "outcome": label }));
        if let Some(m) = message {
            e = e.message(m);
        }
        change.events.push(e);
    }

    /// Counts a node's end once its commit went through: a failure by class, or a success
    /// with the time since its job was submitted. Every end of a node is committed here, so
    /// each is counted once, whichever path led to it.
    fn count_end(&self, was: NodeStatus, update: &TaskUpdate) {
        if was.is_terminal() {
            return;
        }
        let metrics = &self.inner.metrics;
        match update.status {
            NodeStatus::Failed => metrics.node_failed(&self.job.kind, update.failure_class),
            NodeStatus::Succeeded => metrics.node_ready(
                &self.job.kind,
                Duration::from_millis((now_ms() - self.job.created_at).max(0) as u64),
            ),
            _ => {}
        }
    }

    async fn end_task(
        &mut self,
        i: usize,
        status: NodeStatus,
        class: FailureClass,
        message: String,
    ) -> Result<(), Stop> {
        let t = &self.tasks[i];
        warn!(node = %t.name, class = %class, error = %message, "node {status}");
        let mut update = TaskUpdate::from_row(t);
        update.status = status;
        update.wake_at = None;
        update.wait_reason = None;
        update.failure_class = Some(class);
        update.last_error = Some(message.clone());
        let e = NewEvent::new(EventKind::Failed)
            .node(&t.name)
            .attempt(t.attempt + 1)
            .class(Some(class))
            .message(message)
            .data(json!({ "state": t.state }));
        self.commit(i, update, vec![e]).await
    }

    async fn commit(
        &mut self,
        i: usize,
        update: TaskUpdate,
        events: Vec<NewEvent>,
    ) -> Result<(), Stop> {
        let was = self.tasks[i].status;
        let job_state = self.lease(
            self.inner
                .store
                .commit_task(&self.job, self.fence, &update, &events)
                .await,
        )?;
        if let Some(s) = job_state {
            self.job.state = s;
        }
        self.count_end(was, &update);
        let t = &mut self.tasks[i];
        t.state = update.state;
        t.status = update.status;
        t.attempt = update.attempt;
        t.attempts_total = update.attempts_total;
        t.entered_at = update.entered_at;
        t.wake_at = update.wake_at;
        t.wait_reason = update.wait_reason;
        t.failure_class = update.failure_class.map(|c| c.to_string());
        t.last_error = update.last_error;
        Ok(())
    }
}

/// A node's change being assembled: its task's new fields and the events that explain them.
struct Change {
    update: TaskUpdate,
    events: Vec<NewEvent>,
    now: i64,
    /// The class of the failed attempt this change backs off from before trying again,
    /// counted once the change is committed.
    retried: Option<FailureClass>,
}

/// What applying an outcome comes to.
enum Applied {
    /// Commit the change.
    Commit(Change),
    /// End the node failed. `count_run`: add this run to `attempts_total`, as for any step
    /// that answered; a failed attempt that ends the node (its deadline or budget passed)
    /// has never been added there, and the API shows it so.
    Fail {
        class: FailureClass,
        message: String,
        count_run: bool,
    },
}

impl Applied {
    /// The node fails after a failed attempt.
    fn fail(class: FailureClass, message: String) -> Applied {
        Applied::Fail {
            class,
            message,
            count_run: false,
        }
    }
}

/// A step's answer as an outcome. An error is retried under the state's policy — unless
/// retrying cannot help (DESIGN §4): `auth` and `internal` (a bug in Capstan: the same run
/// would fail the same way) fail the node, `invalid_spec` waits for an operator's amend.
fn outcome_of(result: Result<Outcome, StepError>) -> Outcome {
    result.unwrap_or_else(|e| match e.class {
        FailureClass::Auth | FailureClass::Internal => Outcome::Fail {
            class: e.class,
            message: e.message,
        },
        FailureClass::InvalidSpec => Outcome::NeedsInput {
            class: Some(e.class),
            reason: e.message,
        },
        _ => Outcome::Retry {
            class: e.class,
            message: e.message,
        },
    })
}

/// Stops the node until an operator amends its spec and resumes the job.
fn needs_input(change: &mut Change, t: &TaskRow, class: Option<FailureClass>, reason: String) {
    warn!(reason = %reason, "node needs operator input");
    change.update.status = NodeStatus::NeedsInput;
    change.update.wake_at = None;
    change.update.failure_class = class;
    change.update.last_error = Some(reason.clone());
    change.update.wait_reason = Some(reason.clone());
    change.events.push(
        NewEvent::new(EventKind::NeedsInput)
            .node(&t.name)
            .class(class)
            .message(reason),
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// In-process wake-ups for jobs this process holds.
#[derive(Default)]
pub(super) struct Held {
    jobs: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
}

impl Held {
    pub fn insert(&self, id: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.jobs.lock().unwrap().insert(id.to_string(), n.clone());
        n
    }

    /// Forgets `id` if `mine` is still its entry (a newer claim of the same job, after this
    /// runner's lease lapsed, has its own).
    pub fn remove(&self, id: &str, mine: &Arc<Notify>) {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.get(id).is_some_and(|n| Arc::ptr_eq(n, mine)) {
            jobs.remove(id);
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Notify>> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retrying cannot help `auth` or `internal` (the node fails at once) nor `invalid_spec`
    /// (the operator must amend); every other class is retried under the state's policy.
    #[test]
    fn a_step_error_is_retried_only_when_retrying_can_help() {
        for class in FailureClass::ALL.iter().copied() {
            let out = outcome_of(Err(StepError::new(class, "it broke")));
            match class {
                FailureClass::Auth | FailureClass::Internal => {
                    assert!(matches!(out, Outcome::Fail { .. }), "{class}: {out:?}")
                }
                FailureClass::InvalidSpec => {
                    assert!(
                        matches!(out, Outcome::NeedsInput { .. }),
                        "{class}: {out:?}"
                    )
                }
                _ => assert!(matches!(out, Outcome::Retry { .. }), "{class}: {out:?}"),
            }
        }
    }
}
