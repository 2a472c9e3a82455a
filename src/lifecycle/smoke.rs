//! `smoke`: a job kind that touches no cloud, for checking an installation end to end.
//! Node spec: `{"name": ..., "settle": "2s"}` (optional, default 1s).

use std::time::Duration;

use super::kind::{JobKind, Steps};
use super::params::OwnFields;
use crate::engine::progress::{Field, Progress};
use crate::engine::request::FieldError;
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::model::FailureClass;
use crate::store::now_ms;

pub struct Smoke;

impl JobKind for Smoke {
    fn name(&self) -> &'static str {
        "smoke"
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../workflows/smoke.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Local(register)
    }
    fn params(&self) -> OwnFields {
        OwnFields::none()
    }
    /// No fields of its own: the body goes to the generic checks as it came.
    fn prepare(&self, body: serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>> {
        Ok(body)
    }
}

/// What a smoke node records: when it was touched (Unix ms). See `engine::progress`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct SmokeProgress {
    touched_at: Option<i64>,
}

impl Progress for SmokeProgress {}

impl SmokeProgress {
    const TOUCHED_AT: Field<Self, i64> = Field::new("touched_at");
}

fn register(r: &mut Registry) {
    r.step("smoke.touch", &["ok"], touch);
    r.step("smoke.settle", &["ok"], settle);
}

/// Records the touch time once; a re-run after a crash finds it and does not touch again.
async fn touch(mut ctx: StepContext) -> Result<Outcome, StepError> {
    if ctx.progress::<SmokeProgress>()?.touched_at.is_none() {
        ctx.record(SmokeProgress::TOUCHED_AT, &now_ms(), Some("touched".into()))
            .await?;
    }
    Ok(Outcome::next("ok"))
}

/// Waits until `settle` after the touch, as a persisted wait.
async fn settle(ctx: StepContext) -> Result<Outcome, StepError> {
    let settle = match ctx.spec.get("settle").and_then(|v| v.as_str()) {
        Some(s) => crate::duration::parse(s)
            .map_err(|e| StepError::new(FailureClass::InvalidSpec, format!("settle: {e}")))?,
        None => Duration::from_secs(1),
    };
    let touched = ctx
        .progress::<SmokeProgress>()?
        .touched_at
        .unwrap_or_else(now_ms);
    let ready_at = touched + settle.as_millis() as i64;
    if now_ms() >= ready_at {
        Ok(Outcome::next("ok"))
    } else {
        Ok(Outcome::wait_until(
            ready_at,
            format!("settling for {}", crate::duration::format(settle)),
        ))
    }
}
