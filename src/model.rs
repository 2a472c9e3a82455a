//! The vocabulary every layer shares: job and node states, failure classes, event kinds, and
//! the cluster a job acts on.
//!
//! Each enum has exactly one string form, used verbatim by the database columns, the JSON
//! API and the log lines, so an operator can grep one word across all three.

use std::fmt;
use std::str::FromStr;

/// Declares a fieldless enum with a single snake_case string form, plus `Display`,
/// `FromStr` and serde impls that all use that form.
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A CAPI cluster: its namespace and name, `ns/name` in requests and in the stored job.
/// Parsed once where a request comes in (and by steps from the stored string, which can then
/// only fail on a record that was never admitted); there is no default namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterRef {
    pub ns: String,
    pub name: String,
}

impl ClusterRef {
    /// Reads `namespace/name`, both DNS-1123 labels; the error says which part is wrong.
    pub fn parse(s: &str) -> Result<ClusterRef, String> {
        let Some((ns, name)) = s.split_once('/') else {
            return Err(format!("`{s}` is not `namespace/name`"));
        };
        check_dns_label(ns).map_err(|e| format!("namespace: {e}"))?;
        check_dns_label(name).map_err(|e| format!("name: {e}"))?;
        Ok(ClusterRef {
            ns: ns.to_string(),
            name: name.to_string(),
        })
    }

    /// The mark Capstan puts on the OpenStack resources it has made for this cluster
    /// (server metadata, port tags, floating IP descriptions): `<ns>/<name>`.
    pub fn mark(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ClusterRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

/// A DNS-1123 label: what Kubernetes and Nova both accept as a node name, and what a
/// cluster's namespace and name are.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "`{s}` is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric, at most 63)"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: what Kubernetes accepts as the name of most objects (a Secret):
/// DNS-1123 labels joined by '.', at most 253 characters.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    let labels_ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && l.starts_with(|c: char| c.is_ascii_alphanumeric())
            && l.ends_with(|c: char| c.is_ascii_alphanumeric())
    });
    if s.is_empty() || s.len() > 253 || !labels_ok {
        return Err(format!(
            "`{s}` is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending alphanumeric, at most 253)"
        ));
    }
    Ok(())
}

string_enum! {
    /// Where a job is in its life. Derived from its node tasks after every change, inside
    /// the same transaction, so it can never disagree with them.
    pub enum JobState {
        /// Accepted, no step has run yet.
        Queued = "queued",
        /// At least one node task has started and some are still runnable.
        Running = "running",
        /// Nothing can run until an operator amends a node and resumes.
        NeedsInput = "needs_input",
        /// Cancel was asked; in-flight steps finish, nothing new starts.
        Cancelling = "cancelling",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

string_enum! {
    /// Where one node task is. The workflow state name (e.g. `wait_provisioned`) says which
    /// step it is at; this says whether that step can run.
    pub enum NodeStatus {
        /// Not started; the node lock is not yet held.
        Pending = "pending",
        /// Runnable now.
        Running = "running",
        /// A persisted wait: until a time, or until a condition re-checked on a timer or event.
        Waiting = "waiting",
        /// Backing off after a failed attempt until `wake_at`, then running its step again
        /// (the engine's retry of a step error, or a step's own backoff such as scale_out's
        /// cleanup before the next attempt). A watch's nudge never cuts a backoff short.
        BackingOff = "backing_off",
        /// Another job holds this node; re-checked until it is released.
        Blocked = "blocked",
        /// Stopped until an operator amends the node's spec and resumes the job.
        NeedsInput = "needs_input",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

/// How a `waiting` node's reason starts while it waits for its project's quota (scale_out's
/// quota step); `/metrics` counts such nodes apart.
pub const WAITING_FOR_QUOTA: &str = "waiting_for_quota";

impl NodeStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStatus::Succeeded | NodeStatus::Failed | NodeStatus::Cancelled
        )
    }

    /// A status the engine itself will run again without an operator.
    pub fn is_runnable(self) -> bool {
        matches!(
            self,
            NodeStatus::Pending
                | NodeStatus::Running
                | NodeStatus::Waiting
                | NodeStatus::BackingOff
                | NodeStatus::Blocked
        )
    }
}

string_enum! {
    /// Why something failed, which decides what is done about it (DESIGN §4).
    pub enum FailureClass {
        /// Not enough quota: clean up, wait, retry until it fits or the deadline passes.
        Quota = "quota",
        /// No valid host: clean up, back off, retry with the same spec.
        Capacity = "capacity",
        /// The spec cannot work as written: the node needs operator input.
        InvalidSpec = "invalid_spec",
        /// 5xx, timeouts, connection refused: retry with backoff.
        Transient = "transient",
        /// Credentials refused: fail, never retried.
        Auth = "auth",
        /// A name taken by something that is not ours.
        Conflict = "conflict",
        /// A step exceeded its time budget.
        Timeout = "timeout",
        /// The job's deadline passed.
        Deadline = "deadline",
        /// A bug in Capstan, not a fault of the spec or the cloud: a step returned an
        /// outcome its workflow state does not map. The node fails; nothing an operator
        /// amends can help.
        Internal = "internal",
    }
}

string_enum! {
    /// The kinds of entries in a job's append-only history.
    pub enum EventKind {
        Submitted = "submitted",
        /// A node moved from one workflow state to another.
        Transition = "transition",
        Waiting = "waiting",
        Blocked = "blocked",
        Retry = "retry",
        Failed = "failed",
        NeedsInput = "needs_input",
        /// Something a step removed or verified gone.
        Cleanup = "cleanup",
        /// Anything else a step wants on the record (an ID it created, a policy it read).
        Note = "note",
        /// Cancel, resume, amend: who asked for what.
        Operator = "operator",
        /// A worker took over a job whose previous lease lapsed.
        LeaseTakeover = "lease_takeover",
        JobState = "job_state",
    }
}

string_enum! {
    /// What a bearer token may do (DESIGN §6).
    pub enum Role {
        /// Every tenant.
        Admin = "admin",
        /// Every job of one tenant.
        TenantAdmin = "tenant_admin",
        /// Their own jobs in one tenant.
        Member = "member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_one_string_form() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in NodeStatus::ALL {
            assert_eq!(s.as_str().parse::<NodeStatus>().unwrap(), *s);
        }
        for c in FailureClass::ALL {
            assert_eq!(c.as_str().parse::<FailureClass>().unwrap(), *c);
        }
        let err = "sideways".parse::<JobState>().unwrap_err();
        assert!(
            err.contains("`sideways`") && err.contains("needs_input"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_is_namespace_slash_name_with_no_default() {
        let c = ClusterRef::parse("acme/prod").unwrap();
        assert_eq!((c.ns.as_str(), c.name.as_str()), ("acme", "prod"));
        assert_eq!(c.to_string(), "acme/prod");
        for (bad, says) in [
            ("prod", "is not `namespace/name`"),
            ("/prod", "namespace: "),
            ("acme/", "name: "),
            ("a/b/c", "name: `b/c`"),
            ("Acme/prod", "namespace: `Acme`"),
            ("", "is not `namespace/name`"),
        ] {
            let err = ClusterRef::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// The OpenAPI document lists each enum's string forms, in order, so a
    /// client generated from it accepts every value the API can answer.
    #[test]
    fn the_openapi_document_lists_every_string_form() {
        fn forms<T: fmt::Display>(all: &[T]) -> Vec<String> {
            all.iter().map(|v| v.to_string()).collect()
        }
        let doc = &*crate::api::openapi::DOCUMENT;
        let listed = |schema: &str| -> Vec<String> {
            serde_json::from_value(doc["components"]["schemas"][schema]["enum"].clone())
                .unwrap_or_else(|e| panic!("openapi.json: {schema}.enum: {e}"))
        };
        assert_eq!(listed("JobState"), forms(JobState::ALL));
        assert_eq!(listed("NodeStatus"), forms(NodeStatus::ALL));
        assert_eq!(listed("FailureClass"), forms(FailureClass::ALL));
        assert_eq!(listed("EventKind"), forms(EventKind::ALL));
        assert_eq!(listed("Role"), forms(Role::ALL));
    }
}
