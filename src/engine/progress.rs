//! A node's progress record: what its steps made and learned (a server's ID, the attempt
//! count, the failure cleanup must act on), typed per job kind and versioned.
//!
//! Each kind declares a serde struct implementing [`Progress`] and a [`Field`] constant per
//! field; a step reads the whole record with [`StepContext::progress`] and writes one field
//! at a time with [`StepContext::record`] — each write fenced and durable before the step
//! makes its next call to the cloud, so a re-run after a crash finds what the last run made.
//!
//! The stored JSON is an object of the fields plus `"v"`, the version of the structs that
//! wrote it. A record stored without `"v"` (by a version before records were typed, for jobs
//! in flight across an upgrade) is version 0, whose fields are those of version 1. A record
//! is migrated on read; one that cannot be read is an error naming the node and the field —
//! never a default — and fails the node as `internal`.
//!
//! A job whose workflow includes another kind's states (repair: delete_nodes' then
//! scale_out's) keeps one record holding both kinds' fields, so each struct reads the
//! fields it knows and leaves the others alone; they share the version number.
//!
//! [`StepContext::progress`]: super::step::StepContext::progress
//! [`StepContext::record`]: super::step::StepContext::record

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The key under which a record's version is stored.
pub use crate::store::PROGRESS_VERSION_KEY as VERSION_KEY;

/// The version of every kind's progress record this binary writes.
pub const CURRENT_VERSION: u64 = 1;

/// One kind's per-node progress record. Every field is optional (`#[serde(default)]` on
/// the struct): a field is absent until a step records it, and `null` once a step clears it.
pub trait Progress: DeserializeOwned + Default {
    /// Brings a record stored at version `from` to [`CURRENT_VERSION`], or says why it
    /// cannot. Version 0 (no `"v"`) has version 1's fields.
    fn migrate(from: u64, record: Map<String, Value>) -> Result<Map<String, Value>, String> {
        match from {
            0 | CURRENT_VERSION => Ok(record),
            v => Err(format!(
                "version {v} is not one this binary reads (it writes {CURRENT_VERSION})"
            )),
        }
    }
}

/// A field of the progress record `P`, holding a `T`: the one spelling of its key, tied to
/// its type, so a step writes a field of the right type under the right name.
pub struct Field<P, T> {
    pub key: &'static str,
    _types: PhantomData<fn() -> (P, T)>,
}

impl<P, T> Field<P, T> {
    pub const fn new(key: &'static str) -> Field<P, T> {
        Field {
            key,
            _types: PhantomData,
        }
    }
}

impl<P, T> Clone for Field<P, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, T> Copy for Field<P, T> {}

/// Why a stored record could not be read: the field (or `"v"`) and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("progress record field `{field}`: {message}")]
pub struct ProgressError {
    pub field: String,
    pub message: String,
}

/// Reads a stored record as `P`, migrating it from the version it was stored at.
pub fn read<P: Progress>(stored: &Map<String, Value>) -> Result<P, ProgressError> {
    let mut record = stored.clone();
    let from = match record.remove(VERSION_KEY) {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| ProgressError {
            field: VERSION_KEY.to_string(),
            message: format!("{v} is not a version number"),
        })?,
    };
    let record = P::migrate(from, record).map_err(|message| ProgressError {
        field: VERSION_KEY.to_string(),
        message,
    })?;
    serde_json::from_value(Value::Object(record.clone())).map_err(|e| {
        // serde names the field only for a missing one; find the culprit by reading each
        // field alone (every field is optional, so only a bad one fails by itself).
        let field = record
            .iter()
            .find(|(k, v)| {
                let alone = Map::from_iter([((*k).clone(), (*v).clone())]);
                serde_json::from_value::<P>(Value::Object(alone)).is_err()
            })
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "?".to_string());
        ProgressError {
            field,
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        server_id: Option<String>,
        attempts: Option<u32>,
    }
    impl Progress for Sample {}

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_record_stored_before_versions_reads_as_the_current_version() {
        let stored = map(json!({ "server_id": "s-1", "attempts": 2 }));
        let p: Sample = read(&stored).unwrap();
        assert_eq!(p.server_id.as_deref(), Some("s-1"));
        assert_eq!(p.attempts, Some(2));
    }

    #[test]
    fn a_cleared_field_and_an_absent_one_both_read_as_none() {
        let p: Sample = read(&map(json!({ "v": 1, "server_id": null }))).unwrap();
        assert_eq!(p, Sample::default());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error_that_names_it() {
        let e = read::<Sample>(&map(json!({ "v": 1, "server_id": "s", "attempts": "two" })))
            .unwrap_err();
        assert_eq!(e.field, "attempts");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_version_this_binary_does_not_know_is_an_error_that_names_v() {
        let e = read::<Sample>(&map(json!({ "v": 9, "server_id": "s" }))).unwrap_err();
        assert_eq!(e.field, "v");
        let e = read::<Sample>(&map(json!({ "v": "one" }))).unwrap_err();
        assert_eq!(e.field, "v");
    }

    #[test]
    fn fields_another_kind_wrote_are_left_to_that_kind() {
        let p: Sample = read(&map(json!({ "v": 1, "set_members": [], "attempts": 1 }))).unwrap();
        assert_eq!(p.attempts, Some(1));
    }
}
