//! What a `scale_out` node's steps record (also the second half of a `repair` node's
//! record): see `engine::progress` for how records are stored, versioned and read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::progress::{Field, Progress};
use crate::model::FailureClass;

/// A scale_out node's progress: the current attempt's server and floating IP, and what the
/// last failure left for cleanup and the next attempt.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScaleOutProgress {
    /// Attempts that created a Machine (absent: none has, so cleanup finds nothing of ours
    /// in OpenStack).
    pub attempts: Option<u64>,
    /// This attempt's server, as provisioning saw it.
    pub server_id: Option<String>,
    /// This attempt's floating IP, recorded before it is associated.
    pub floating_ip_id: Option<String>,
    /// What failed, for cleanup to act on; cleared by the next attempt.
    pub failure: Option<RecordedFailure>,
    /// Failures counted for the backoff between attempts.
    pub failures: Option<u32>,
    /// The end of the backoff after a cleaned-up failure (Unix ms).
    pub retry_at: Option<i64>,
    /// The spec the node asked an operator to amend, while it waits for input.
    pub awaiting_input: Option<Map<String, Value>>,
}

impl Progress for ScaleOutProgress {}

/// A classified failure as a step recorded it for cleanup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedFailure {
    pub class: FailureClass,
    pub reason: String,
    pub short: Vec<String>,
    pub text: String,
}

impl ScaleOutProgress {
    pub const ATTEMPTS: Field<Self, u64> = Field::new("attempts");
    pub const SERVER_ID: Field<Self, String> = Field::new("server_id");
    pub const FLOATING_IP_ID: Field<Self, String> = Field::new("floating_ip_id");
    pub const FAILURE: Field<Self, RecordedFailure> = Field::new("failure");
    pub const FAILURES: Field<Self, u32> = Field::new("failures");
    pub const RETRY_AT: Field<Self, i64> = Field::new("retry_at");
    pub const AWAITING_INPUT: Field<Self, Map<String, Value>> = Field::new("awaiting_input");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::progress::read;
    use serde_json::json;

    /// A record exactly as the release before typed records stored it (no `"v"`, the
    /// failure as a JSON object, cleared fields as `null`): a job in flight across the
    /// upgrade reads it as the current version.
    #[test]
    fn a_record_stored_before_records_were_typed_reads_as_the_current_version() {
        let stored = json!({
            "attempts": 2,
            "server_id": null,
            "floating_ip_id": null,
            "failure": { "class": "capacity", "text": "No valid host was found.",
                         "reason": "no valid host", "short": [] },
            "failures": 1,
            "retry_at": 1_790_000_000_000i64,
        });
        let p: ScaleOutProgress = read(stored.as_object().unwrap()).unwrap();
        assert_eq!(p.attempts, Some(2));
        assert_eq!((p.server_id, p.floating_ip_id), (None, None));
        let f = p.failure.unwrap();
        assert_eq!(f.class, FailureClass::Capacity);
        assert_eq!(f.text, "No valid host was found.");
        assert_eq!((p.failures, p.retry_at), (Some(1), Some(1_790_000_000_000)));
        assert!(p.awaiting_input.is_none());
    }

    #[test]
    fn a_stored_failure_with_a_class_this_binary_does_not_know_names_the_field() {
        let stored = json!({ "v": 1, "attempts": 1,
            "failure": { "class": "gremlins", "text": "", "reason": "", "short": [] } });
        let e = read::<ScaleOutProgress>(stored.as_object().unwrap()).unwrap_err();
        assert_eq!(e.field, "failure");
    }

    /// What a step records reads back as what it wrote.
    #[test]
    fn a_recorded_failure_round_trips() {
        let f = RecordedFailure {
            class: FailureClass::Quota,
            reason: "quota exceeded".into(),
            short: vec!["cores".into()],
            text: "Quota exceeded for cores".into(),
        };
        let stored = json!({ "v": 1, ScaleOutProgress::FAILURE.key: f });
        let p: ScaleOutProgress = read(stored.as_object().unwrap()).unwrap();
        let back = p.failure.unwrap();
        assert_eq!((back.class, back.short), (FailureClass::Quota, f.short));
    }
}
