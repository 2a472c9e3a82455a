//! The step contract: a step is an async Rust function registered by name. It reads the
//! node's persisted state, acts, records what it made, and returns an [`Outcome`].
//!
//! Steps never sleep: waiting is an outcome, persisted with its deadline, so it survives a
//! restart. Steps must be safe to run again: a crash between a step's act and the commit of
//! its outcome re-runs it, so it looks before it creates and records external IDs in its
//! node's progress record (through [`StepContext::record`]) before moving on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::progress::{self, Field, Progress};
use crate::model::{EventKind, FailureClass};
use crate::store::{NewEvent, Store, StoreError};

/// What a step asks the engine to do next.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Follow the workflow transition named `label`. `note` is recorded with the transition
    /// (e.g. the failure that sends a node to cleanup).
    Next {
        label: String,
        note: Option<(Option<FailureClass>, String)>,
    },
    /// Stay in this state and run the step again at `until` (Unix ms) or after `recheck`,
    /// whichever is set, or earlier when woken. `reason` is shown to operators.
    Wait {
        reason: String,
        until: Option<i64>,
        recheck: Duration,
    },
    /// Back off after a failed attempt the step handled itself (scale_out's cleanup before
    /// the next try), then run the step again at `until` (Unix ms). The node's status is
    /// `backing_off`, so unlike a `Wait` no watch's nudge cuts it short. The step computes
    /// `until` with a [`RetryPolicy`](super::retry::RetryPolicy) — the one backoff policy
    /// type, the engine's own retries use it too — and records it before returning, so a
    /// re-run after a crash backs off until the same time. `class` is the failed attempt's,
    /// for the retry's count.
    Backoff {
        class: FailureClass,
        reason: String,
        until: i64,
    },
    /// The attempt failed; retry this state under its retry policy.
    Retry {
        class: FailureClass,
        message: String,
    },
    /// The node cannot succeed; it ends failed.
    Fail {
        class: FailureClass,
        message: String,
    },
    /// Stop until an operator amends the node's spec and resumes the job.
    NeedsInput {
        class: Option<FailureClass>,
        reason: String,
    },
}

impl Outcome {
    pub fn next(label: &str) -> Outcome {
        Outcome::Next {
            label: label.to_string(),
            note: None,
        }
    }

    /// A transition that records why it was taken.
    pub fn next_because(
        label: &str,
        class: Option<FailureClass>,
        message: impl Into<String>,
    ) -> Outcome {
        Outcome::Next {
            label: label.to_string(),
            note: Some((class, message.into())),
        }
    }

    pub fn wait_until(until_ms: i64, reason: impl Into<String>) -> Outcome {
        Outcome::Wait {
            reason: reason.into(),
            until: Some(until_ms),
            recheck: Duration::ZERO,
        }
    }

    pub fn recheck_in(after: Duration, reason: impl Into<String>) -> Outcome {
        Outcome::Wait {
            reason: reason.into(),
            until: None,
            recheck: after,
        }
    }

    pub fn backoff_until(until_ms: i64, class: FailureClass, reason: impl Into<String>) -> Outcome {
        Outcome::Backoff {
            class,
            reason: reason.into(),
            until: until_ms,
        }
    }

    pub fn retry(class: FailureClass, message: impl Into<String>) -> Outcome {
        Outcome::Retry {
            class,
            message: message.into(),
        }
    }

    pub fn fail(class: FailureClass, message: impl Into<String>) -> Outcome {
        Outcome::Fail {
            class,
            message: message.into(),
        }
    }

    pub fn needs_input(class: Option<FailureClass>, reason: impl Into<String>) -> Outcome {
        Outcome::NeedsInput {
            class,
            reason: reason.into(),
        }
    }
}

/// A failed attempt, classified. `?` on it in a step means "retry under the state's policy"
/// — except `auth`, which fails the node, and `invalid_spec`, which waits for an operator to
/// amend the node and resume (retrying either cannot help).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}")]
pub struct StepError {
    pub class: FailureClass,
    pub message: String,
}

impl StepError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> StepError {
        StepError {
            class,
            message: message.into(),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> StepError {
        StepError::new(FailureClass::Transient, e.to_string())
    }
}

/// A node's progress record as stored (see [`progress`]), and whether the running step
/// wrote to it.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub map: Map<String, Value>,
    /// Why the stored record could not be read at all, if it could not.
    pub unreadable: Option<String>,
    pub dirty: bool,
}

/// What a step sees of its job and node, and the only way it writes to the job's record.
pub struct StepContext {
    pub job_id: String,
    pub kind: String,
    pub tenant: String,
    pub cluster: String,
    pub params: Arc<Value>,
    pub node: String,
    pub spec: Value,
    /// The workflow state this step runs in.
    pub state: String,
    /// 1 on the first try in this state, 2 on the first retry, and so on.
    pub attempt: u32,
    /// What this node's steps recorded, shared with the runner so the next step sees it.
    pub(crate) external: Arc<Mutex<Recorded>>,
    pub(crate) store: Store,
    pub(crate) fence: i64,
}

impl StepContext {
    /// This node's progress record as the kind's struct `P`, migrated from the version it
    /// was stored at. A record that cannot be read is a bug or a damaged database, not a
    /// fault of the spec or the cloud: the error (class `internal`, which fails the node)
    /// names the node and the field.
    pub fn progress<P: Progress>(&self) -> Result<P, StepError> {
        let rec = self.external.lock().unwrap();
        if let Some(e) = &rec.unreadable {
            return Err(StepError::new(
                FailureClass::Internal,
                format!("node {}: progress record unreadable: {e}", self.node),
            ));
        }
        progress::read(&rec.map)
            .map_err(|e| StepError::new(FailureClass::Internal, format!("node {}: {e}", self.node)))
    }

    /// Durably records `value` as `field` of this node's progress record before the step
    /// moves on, with an optional note for the history. Fails if this worker no longer holds
    /// the job.
    pub async fn record<P: Progress, T: Serialize>(
        &mut self,
        field: Field<P, T>,
        value: &T,
        note: Option<String>,
    ) -> Result<(), StepError> {
        let value = serde_json::to_value(value).map_err(|e| {
            StepError::new(
                FailureClass::Internal,
                format!(
                    "node {}: field `{}` not recordable: {e}",
                    self.node, field.key
                ),
            )
        })?;
        self.write(field.key, value, note).await
    }

    /// Clears `field` (stored as `null`, read as `None`), fenced like [`Self::record`].
    pub async fn clear<P: Progress, T>(&mut self, field: Field<P, T>) -> Result<(), StepError> {
        self.write(field.key, Value::Null, None).await
    }

    async fn write(
        &mut self,
        key: &str,
        value: Value,
        note: Option<String>,
    ) -> Result<(), StepError> {
        let event = note.map(|m| {
            NewEvent::new(EventKind::Note)
                .node(&self.node)
                .message(m)
                .data(serde_json::json!({ key: value }))
        });
        self.store
            .record_external(
                &self.job_id,
                self.fence,
                &self.node,
                progress::CURRENT_VERSION,
                key,
                &value,
                event.as_ref(),
            )
            .await?;
        let mut rec = self.external.lock().unwrap();
        rec.map.insert(
            progress::VERSION_KEY.to_string(),
            progress::CURRENT_VERSION.into(),
        );
        rec.map.insert(key.to_string(), value);
        rec.dirty = true;
        Ok(())
    }

    /// Appends an entry to the job's history (cleanup done, policy read, ...).
    pub async fn event(
        &self,
        kind: EventKind,
        message: impl Into<String>,
        data: Option<Value>,
    ) -> Result<(), StepError> {
        let mut e = NewEvent::new(kind).node(&self.node).message(message);
        if let Some(d) = data {
            e = e.data(d);
        }
        self.store
            .append_events(&self.job_id, self.fence, &[e])
            .await?;
        Ok(())
    }
}

pub type StepFuture = Pin<Box<dyn Future<Output = Result<Outcome, StepError>> + Send>>;
pub type StepFn = Arc<dyn Fn(StepContext) -> StepFuture + Send + Sync>;

pub struct StepDef {
    pub name: String,
    /// The transition labels this step may return in `Outcome::Next`.
    pub outcomes: Vec<&'static str>,
    pub run: StepFn,
}

/// Steps by name. Built once at start, read-only after.
#[derive(Default)]
pub struct Registry {
    steps: HashMap<String, StepDef>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `name`, which returns only the `outcomes` labels in `Outcome::Next`.
    pub fn step<F, Fut>(&mut self, name: &str, outcomes: &[&'static str], f: F) -> &mut Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, StepError>> + Send + 'static,
    {
        let run: StepFn = Arc::new(move |ctx| Box::pin(f(ctx)));
        self.steps.insert(
            name.to_string(),
            StepDef {
                name: name.to_string(),
                outcomes: outcomes.to_vec(),
                run,
            },
        );
        self
    }

    pub fn step_def(&self, name: &str) -> Option<&StepDef> {
        self.steps.get(name)
    }

    pub fn step_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.steps.keys().cloned().collect();
        names.sort();
        names
    }
}
