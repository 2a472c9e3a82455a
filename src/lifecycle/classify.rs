//! The failure classifier: what OpenStack, Kubernetes, CAPO or CAPI said → a `FailureClass`.
//!
//! The class decides the policy (DESIGN §4): quota waits, capacity backs off, invalid_spec
//! stops the node for operator input, transient retries, auth fails the job, conflict lets
//! the step decide between adopting and `invalid_spec`. It is the one place that maps error
//! text to a class, so it is a single ordered table, [`RULES`]; the first row that matches
//! wins, and every row has a test fed with the upstream text it was written for.
//!
//! Upstream errors reach Capstan in three wrappings, all unwrapped before the table is read:
//! - a bare API answer: a status plus a JSON body (`{"forbidden": {"code": 403, "message":
//!   …}}`, `{"NeutronError": {"type": …, "message": …}}`, a Kubernetes `Status`);
//! - CAPO's condition message, gophercloud's error around that answer: `error creating
//!   Openstack instance: Expected HTTP response code [202] when accessing [POST <url>], but
//!   got 403 instead: <body>` (the status and the service come from the text and the URL);
//! - CAPI's Machine `failureMessage`: `Failure detected from referenced resource <GVK> with
//!   name "<name>": <msg>`.
//!
//! Fallbacks, chosen so that a misclassification costs an operator's look rather than a
//! silent loop:
//! - a 4xx no row names is `invalid_spec`: OpenStack answered that this request, as sent,
//!   will not be done, and repeating it unchanged gets the same answer; the node stops with
//!   the raw message for an operator instead of retrying until the deadline. 408 and 429
//!   (the only "try again" 4xx codes) are transient, by their own rows.
//! - a 5xx no row names is transient (the service, not the request, failed).
//! - text with no status that no row names (a dropped connection, an unknown condition
//!   message) is transient, marked as a guess in its reason: the workflow's retry budget and
//!   the job's deadline bound it, and every attempt's raw text stays in the history.
//!
//! Pure: no I/O. `timeout` and `deadline` are never produced here; the engine decides those.

use serde::Serialize;
use serde_json::Value;

use crate::model::FailureClass;

/// Where a failure was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An answer from Nova's API.
    Nova,
    /// An answer from Neutron's API.
    Neutron,
    /// An answer from Cinder's API.
    Cinder,
    /// An answer from Glance's API.
    Glance,
    /// An answer from a Kubernetes API server (the management or the workload cluster).
    Kubernetes,
    /// A server's `fault` (`GET /servers/{id}` of a server in ERROR); `status` is its `code`.
    NovaFault,
    /// The message of a condition CAPO set on an OpenStackServer/OpenStackMachine.
    OpenStackServerCondition,
    /// A Machine's `failureMessage` (CAPI's wrapping of the infrastructure's failure).
    MachineFailure,
    /// No answer at all: connection refused or reset, DNS, TLS, a client-side timeout.
    Network,
}

/// One failure as a step saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub source: Source,
    /// The HTTP status (or a Nova fault's `code`), when there was one.
    pub status: Option<u16>,
    /// The raw text: a response body, a condition or failure message, an error's `Display`.
    pub text: String,
}

impl Failure {
    pub fn new(source: Source, status: Option<u16>, text: impl Into<String>) -> Failure {
        Failure {
            source,
            status,
            text: text.into(),
        }
    }
}

/// What the classifier made of a failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    pub class: FailureClass,
    /// The id of the table row that matched (`fallback_*` when none did).
    pub rule: &'static str,
    /// A short human reason, for the node's status and the job's history.
    pub reason: &'static str,
    /// For quota: the resources named as short, in the upstream spelling (`instances`,
    /// `cores`, `ram`, `volumes`, `gigabytes`, `port`, `floatingip`). Empty if not named.
    pub short: Vec<String>,
    /// The service the failure came from after unwrapping (CAPO's and CAPI's wrappings give
    /// way to the service their text or URL names, when it names one).
    pub source: Source,
    /// The status after unwrapping (gophercloud's `but got 403 instead`, a body's `code`).
    pub status: Option<u16>,
    /// The innermost upstream message (a JSON body's `message`), or the unwrapped text.
    pub message: String,
}

/// Which statuses a rule accepts.
#[derive(Debug, Clone, Copy)]
enum Status {
    Any,
    Is(&'static [u16]),
    Between(u16, u16),
}

/// How a quota rule names the short resource.
#[derive(Debug, Clone, Copy)]
enum Short {
    None,
    /// Nova: `Quota exceeded for cores: Requested …` → the list before the colon.
    NovaOvers,
    /// Neutron: `Quota exceeded for resources: ['port'].` → the Python list.
    NeutronList,
    /// Cinder: `… exceeded for quota 'volumes'.`
    CinderQuotaName,
    /// Cinder: `… exceeds allowed gigabytes quota.`
    CinderAllowed,
    Fixed(&'static str),
}

/// One row of the table: a failure matches if its (unwrapped) source is in `from` (any if
/// empty), its status fits `status` (`Any` also accepts none), and its lowercased text
/// contains every string in `all`.
#[derive(Debug)]
struct Rule {
    id: &'static str,
    from: &'static [Source],
    status: Status,
    all: &'static [&'static str],
    class: FailureClass,
    reason: &'static str,
    short: Short,
}

use FailureClass as C;
use Source as S;

/// The table, in the order it is read. Quota rows come first, so a 403 that is a quota is
/// never read as `auth`; specific texts come before the status-only rows they would also
/// match.
const RULES: &[Rule] = &[
    // ---- quota ----
    Rule {
        id: "neutron_over_quota",
        from: &[],
        status: Status::Any,
        all: &["quota exceeded for resources:"],
        class: C::Quota,
        reason: "Neutron quota exceeded",
        short: Short::NeutronList,
    },
    Rule {
        id: "nova_quota_exceeded",
        from: &[],
        status: Status::Any,
        all: &["quota exceeded for ", ": requested "],
        class: C::Quota,
        reason: "Nova quota exceeded",
        short: Short::NovaOvers,
    },
    Rule {
        id: "nova_port_limit",
        from: &[],
        status: Status::Any,
        all: &["maximum number of ports exceeded"],
        class: C::Quota,
        reason: "Neutron port quota exceeded (reported by Nova)",
        short: Short::Fixed("port"),
    },
    Rule {
        id: "cinder_volume_limit",
        from: &[],
        status: Status::Any,
        all: &["maximum number of volumes allowed", "exceeded for quota '"],
        class: C::Quota,
        reason: "Cinder volume count quota exceeded",
        short: Short::CinderQuotaName,
    },
    Rule {
        id: "cinder_size_quota",
        from: &[],
        status: Status::Any,
        all: &["requested volume or snapshot exceeds allowed "],
        class: C::Quota,
        reason: "Cinder gigabytes quota exceeded",
        short: Short::CinderAllowed,
    },
    Rule {
        // Nova answered quota with 413 before Juno (nova af44b50), Cinder still does.
        id: "over_limit_413",
        from: &[S::Nova, S::Cinder],
        status: Status::Is(&[413]),
        all: &[],
        class: C::Quota,
        reason: "over a limit (413) without a recognised quota text",
        short: Short::None,
    },
    // ---- capacity ----
    Rule {
        id: "no_valid_host",
        from: &[],
        status: Status::Any,
        all: &["no valid host was found"],
        class: C::Capacity,
        reason: "the scheduler found no host with room for this server",
        short: Short::None,
    },
    Rule {
        id: "retries_exhausted",
        from: &[],
        status: Status::Any,
        all: &["exhausted all hosts available for retrying build failures"],
        class: C::Capacity,
        reason: "every candidate host failed to build the server",
        short: Short::None,
    },
    // ---- invalid_spec ----
    Rule {
        id: "volume_type_not_found",
        from: &[],
        status: Status::Any,
        all: &["volume type ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the volume type does not exist",
        short: Short::None,
    },
    Rule {
        id: "flavor_not_found",
        from: &[],
        status: Status::Any,
        all: &["flavor ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the flavor does not exist",
        short: Short::None,
    },
    Rule {
        id: "invalid_flavor_ref",
        from: &[],
        status: Status::Any,
        all: &["invalid flavorref provided"],
        class: C::InvalidSpec,
        reason: "the flavor does not exist",
        short: Short::None,
    },
    Rule {
        id: "image_not_found",
        from: &[],
        status: Status::Any,
        all: &["image ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the image does not exist",
        short: Short::None,
    },
    Rule {
        id: "cannot_find_image",
        from: &[],
        status: Status::Any,
        all: &["can not find requested image"],
        class: C::InvalidSpec,
        reason: "the image does not exist",
        short: Short::None,
    },
    Rule {
        id: "key_name_invalid",
        from: &[],
        status: Status::Any,
        all: &["invalid key_name provided"],
        class: C::InvalidSpec,
        reason: "the SSH key pair does not exist",
        short: Short::None,
    },
    Rule {
        id: "subnet_not_found",
        from: &[],
        status: Status::Any,
        all: &["subnet ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the subnet does not exist",
        short: Short::None,
    },
    Rule {
        id: "network_not_found",
        from: &[],
        status: Status::Any,
        all: &["network ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the network does not exist",
        short: Short::None,
    },
    Rule {
        id: "availability_zone_unavailable",
        from: &[],
        status: Status::Any,
        all: &["the requested availability zone is not available"],
        class: C::InvalidSpec,
        reason: "the availability zone does not exist",
        short: Short::None,
    },
    Rule {
        id: "compute_host_not_found",
        from: &[],
        status: Status::Any,
        all: &["compute host ", " could not be found"],
        class: C::InvalidSpec,
        reason: "the compute host does not exist",
        short: Short::None,
    },
    Rule {
        id: "ip_not_in_subnet",
        from: &[],
        status: Status::Any,
        all: &["is not a valid ip for the specified subnet"],
        class: C::InvalidSpec,
        reason: "the IP address is outside the subnet",
        short: Short::None,
    },
    Rule {
        // The IPAM driver's class of the same name (neutron ipam/exceptions.py:38-39).
        id: "ip_does_not_belong_to_subnet",
        from: &[],
        status: Status::Any,
        all: &["does not belong to subnet"],
        class: C::InvalidSpec,
        reason: "the IP address is outside the subnet",
        short: Short::None,
    },
    Rule {
        // Also what a floating IP create with a taken `floating_ip_address` answers: the
        // address is allocated as a port on the external network's subnet.
        id: "ip_already_allocated",
        from: &[],
        status: Status::Any,
        all: &["already allocated in subnet"],
        class: C::InvalidSpec,
        reason: "the IP address (fixed or floating) is already allocated",
        short: Short::None,
    },
    Rule {
        id: "ip_in_use",
        from: &[],
        status: Status::Any,
        all: &["unable to complete operation for network", "is in use"],
        class: C::InvalidSpec,
        reason: "the IP address (fixed or floating) is already in use",
        short: Short::None,
    },
    Rule {
        // CAPI's webhooks deny with 403 or 422: the spec, not the credentials, is refused.
        id: "kube_admission_denied",
        from: &[S::Kubernetes],
        status: Status::Any,
        all: &["admission webhook", "denied the request"],
        class: C::InvalidSpec,
        reason: "an admission webhook refused the object",
        short: Short::None,
    },
    // ---- auth ----
    Rule {
        id: "unauthorized_401",
        from: &[],
        status: Status::Is(&[401]),
        all: &[],
        class: C::Auth,
        reason: "the credentials were refused (401)",
        short: Short::None,
    },
    Rule {
        id: "forced_host_policy",
        from: &[],
        status: Status::Any,
        all: &["policy doesn't allow", "forced_host"],
        class: C::Auth,
        reason: "pinning a compute host needs admin credentials",
        short: Short::None,
    },
    Rule {
        id: "policy_forbids",
        from: &[],
        status: Status::Any,
        all: &["policy doesn't allow"],
        class: C::Auth,
        reason: "the credentials lack the role this action needs",
        short: Short::None,
    },
    Rule {
        id: "forbidden_403",
        from: &[],
        status: Status::Is(&[403]),
        all: &[],
        class: C::Auth,
        reason: "forbidden (403) and not a quota",
        short: Short::None,
    },
    // ---- conflict ----
    Rule {
        id: "kube_already_exists",
        from: &[S::Kubernetes],
        status: Status::Is(&[409]),
        all: &["already exists"],
        class: C::Conflict,
        reason: "an object of that name already exists",
        short: Short::None,
    },
    Rule {
        // Optimistic concurrency: re-reading and retrying is the fix.
        id: "kube_stale_write",
        from: &[S::Kubernetes],
        status: Status::Is(&[409]),
        all: &["the object has been modified"],
        class: C::Transient,
        reason: "the object changed since it was read (stale resourceVersion)",
        short: Short::None,
    },
    Rule {
        id: "kube_invalid",
        from: &[S::Kubernetes],
        status: Status::Is(&[422]),
        all: &[],
        class: C::InvalidSpec,
        reason: "the API server refused the object as invalid",
        short: Short::None,
    },
    // ---- transient ----
    Rule {
        id: "server_went_error",
        from: &[],
        status: Status::Any,
        all: &["instance state \"error\" is unexpected"],
        class: C::Transient,
        reason: "the server went to ERROR; its Nova fault says why",
        short: Short::None,
    },
    Rule {
        // CAPO openstackmachine_controller.go / openstackserver_controller.go
        // (ServerUnexpectedDeletedMessage): Nova no longer has the server CAPO made.
        id: "server_deleted_outside",
        from: &[],
        status: Status::Any,
        all: &["the server was unexpectedly deleted"],
        class: C::Transient,
        reason: "the server was deleted outside CAPO; a new one is made",
        short: Short::None,
    },
    Rule {
        id: "nova_unexpected_api_error",
        from: &[],
        status: Status::Any,
        all: &["unexpected api error"],
        class: C::Transient,
        reason: "Nova failed internally (often its database or message queue)",
        short: Short::None,
    },
    Rule {
        id: "db_connection_error",
        from: &[],
        status: Status::Any,
        all: &["dbconnectionerror"],
        class: C::Transient,
        reason: "the service lost its database (MariaDB)",
        short: Short::None,
    },
    Rule {
        id: "mysql_lost_connection",
        from: &[],
        status: Status::Any,
        all: &["lost connection to mysql server"],
        class: C::Transient,
        reason: "the service lost its database (MariaDB)",
        short: Short::None,
    },
    Rule {
        id: "messaging_timeout",
        from: &[],
        status: Status::Any,
        all: &["messagingtimeout"],
        class: C::Transient,
        reason: "an RPC over the message queue (RabbitMQ) timed out",
        short: Short::None,
    },
    Rule {
        id: "amqp_unreachable",
        from: &[],
        status: Status::Any,
        all: &["amqp server"],
        class: C::Transient,
        reason: "the service lost its message queue (RabbitMQ)",
        short: Short::None,
    },
    Rule {
        id: "nova_state_conflict",
        from: &[S::Nova],
        status: Status::Is(&[409]),
        all: &["while it is in"],
        class: C::Transient,
        reason: "the server is busy with another task",
        short: Short::None,
    },
    Rule {
        id: "connection_refused",
        from: &[],
        status: Status::Any,
        all: &["connection refused"],
        class: C::Transient,
        reason: "the endpoint refused the connection",
        short: Short::None,
    },
    Rule {
        id: "connection_reset",
        from: &[],
        status: Status::Any,
        all: &["connection reset"],
        class: C::Transient,
        reason: "the connection was reset",
        short: Short::None,
    },
    Rule {
        id: "timed_out",
        from: &[],
        status: Status::Any,
        all: &["timed out"],
        class: C::Transient,
        reason: "the request timed out",
        short: Short::None,
    },
    Rule {
        id: "retry_later_408_429",
        from: &[],
        status: Status::Is(&[408, 429]),
        all: &[],
        class: C::Transient,
        reason: "asked to slow down or retry (408/429)",
        short: Short::None,
    },
    Rule {
        id: "server_error_5xx",
        from: &[],
        status: Status::Between(500, 599),
        all: &[],
        class: C::Transient,
        reason: "the service failed (5xx)",
        short: Short::None,
    },
];

/// A 4xx no row names.
const FALLBACK_4XX: (&str, &str) = (
    "fallback_4xx",
    "refused (4xx) for a reason no rule knows; repeating it unchanged would be refused again",
);
/// Anything else no row names.
const FALLBACK_OTHER: (&str, &str) = (
    "fallback_unrecognised",
    "unrecognised failure; retried as transient (a guess bounded by the retry budget)",
);

/// Classifies one failure by the first row of [`RULES`] that matches it.
pub fn classify(f: &Failure) -> Classified {
    let u = unwrap(f);
    let lower = u.message.to_lowercase();
    let hit = RULES.iter().find(|r| {
        (r.from.is_empty() || r.from.contains(&u.source))
            && status_fits(r.status, u.status)
            && r.all.iter().all(|p| lower.contains(p))
    });
    let (class, rule, reason, short) = match hit {
        Some(r) => (r.class, r.id, r.reason, short_resources(r.short, &lower)),
        None => match u.status {
            Some(s) if (400..500).contains(&s) => {
                (C::InvalidSpec, FALLBACK_4XX.0, FALLBACK_4XX.1, Vec::new())
            }
            _ => (C::Transient, FALLBACK_OTHER.0, FALLBACK_OTHER.1, Vec::new()),
        },
    };
    Classified {
        class,
        rule,
        reason,
        short,
        source: u.source,
        status: u.status,
        message: u.message,
    }
}

fn status_fits(want: Status, got: Option<u16>) -> bool {
    match (want, got) {
        (Status::Any, _) => true,
        (Status::Is(list), Some(s)) => list.contains(&s),
        (Status::Between(lo, hi), Some(s)) => (lo..=hi).contains(&s),
        (_, None) => false,
    }
}

/// A failure with its wrappings taken off.
struct Unwrapped {
    source: Source,
    status: Option<u16>,
    message: String,
}

const CAPI_PREFIX: &str = "Failure detected from referenced resource ";
const GOPHERCLOUD_GOT: &str = "but got ";

fn unwrap(f: &Failure) -> Unwrapped {
    let mut source = f.source;
    let mut status = f.status;
    let mut text = f.text.trim();

    // CAPI: `Failure detected from referenced resource <GVK> with name "<name>": <msg>`.
    if let Some(at) = text.find(CAPI_PREFIX) {
        let rest = &text[at + CAPI_PREFIX.len()..];
        if let Some(name_at) = rest.find(" with name \"") {
            let after_name = &rest[name_at + " with name \"".len()..];
            if let Some(end) = after_name.find("\": ") {
                text = after_name[end + 3..].trim();
            }
        }
    }

    // gophercloud: `Expected HTTP response code [..] when accessing [POST <url>], but got
    // <status> instead: <body>`.
    if let Some(at) = text.find(GOPHERCLOUD_GOT) {
        let rest = &text[at + GOPHERCLOUD_GOT.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let (Ok(code), true) = (
            digits.parse::<u16>(),
            rest[digits.len()..].starts_with(" instead"),
        ) {
            status = status.or(Some(code));
            if let Some(s) = service_from_url(&text[..at]) {
                source = narrow(source, s);
            }
            let body = rest[digits.len() + " instead".len()..].trim_start_matches(':');
            text = body.trim();
        }
    }

    // A JSON error body: OpenStack's `{"<fault>": {"code", "message"}}`, Neutron's
    // `{"NeutronError": {"type", "message"}}`, or a Kubernetes `Status`.
    let mut message = text.to_string();
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) {
        if obj.get("kind").and_then(Value::as_str) == Some("Status") {
            if let Some(m) = obj.get("message").and_then(Value::as_str) {
                message = m.to_string();
            }
            status = status.or(code_of(obj.get("code")));
            source = narrow(source, S::Kubernetes);
        } else if obj.len() == 1 {
            let (key, inner) = obj.iter().next().expect("one entry");
            if let Some(m) = inner.get("message").and_then(Value::as_str) {
                message = m.to_string();
            }
            status = status.or(code_of(inner.get("code")));
            if key == "NeutronError" {
                source = narrow(source, S::Neutron);
            }
        }
    }
    Unwrapped {
        source,
        status,
        message,
    }
}

fn code_of(v: Option<&Value>) -> Option<u16> {
    v.and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
}

/// A wrapper source gives way to the service its text names; a direct source stays.
fn narrow(current: Source, inner: Source) -> Source {
    match current {
        S::OpenStackServerCondition | S::MachineFailure | S::Network => inner,
        other => other,
    }
}

/// The service an OpenStack URL belongs to, by its path or default port.
fn service_from_url(s: &str) -> Option<Source> {
    let s = s.to_lowercase();
    if s.contains("/servers") || s.contains(":8774") {
        Some(S::Nova)
    } else if s.contains("/volumes") || s.contains(":8776") {
        Some(S::Cinder)
    } else if s.contains(":9696")
        || ["ports", "floatingips", "networks", "subnets"]
            .iter()
            .any(|r| s.contains(&format!("/v2.0/{r}")))
    {
        Some(S::Neutron)
    } else {
        None
    }
}

fn short_resources(how: Short, lower: &str) -> Vec<String> {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|r| r.trim().trim_matches(|c| c == '\'' || c == '"').trim())
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    };
    let between = |start: &str, end: &str| -> Option<String> {
        let from = lower.find(start)? + start.len();
        let len = lower[from..].find(end)?;
        Some(lower[from..from + len].to_string())
    };
    match how {
        Short::None => Vec::new(),
        Short::Fixed(r) => vec![r.to_string()],
        Short::NovaOvers => between("quota exceeded for ", ":")
            .map(|s| list(&s))
            .unwrap_or_default(),
        Short::NeutronList => between("quota exceeded for resources: [", "]")
            .map(|s| list(&s))
            .unwrap_or_default(),
        Short::CinderQuotaName => between("for quota '", "'")
            .map(|s| list(&s))
            .unwrap_or_default(),
        Short::CinderAllowed => between("exceeds allowed ", " quota")
            .map(|s| list(&s))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn check(
        source: Source,
        status: Option<u16>,
        text: &str,
        class: FailureClass,
        rule: &str,
        short: &[&str],
    ) {
        let c = classify(&Failure::new(source, status, text));
        assert_eq!(
            (
                c.class,
                c.rule,
                c.short.iter().map(String::as_str).collect::<Vec<_>>()
            ),
            (class, rule, short.to_vec()),
            "classifying {source:?} {status:?} {text}"
        );
    }

    /// One test per row of `RULES`, each fed the upstream text the row was written for,
    /// and `CASE_RULES` listing the rows they exercise.
    macro_rules! cases {
        ($($test:ident: $src:ident, $status:expr, $text:expr => $class:ident, $rule:literal, [$($short:literal),*];)+) => {
            $(
                #[test]
                fn $test() {
                    check(S::$src, $status, $text, C::$class, $rule, &[$($short),*]);
                }
            )+
            const CASE_RULES: &[&str] = &[$($rule),+];
        };
    }

    cases! {
        // ERRORS.md: neutron-lib exceptions/__init__.py:433-441 (body), ops-quotas.rst:12.
        neutron_over_quota_port: Neutron, Some(409),
            r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#
            => Quota, "neutron_over_quota", ["port"];
        neutron_over_quota_floatingip: Neutron, Some(409),
            "Quota exceeded for resources: ['floatingip']."
            => Quota, "neutron_over_quota", ["floatingip"];
        // ERRORS.md: nova servers.py:834-836, test_servers.py:6025-6041.
        nova_quota_instances: Nova, Some(403),
            r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}"#
            => Quota, "nova_quota_exceeded", ["instances"];
        nova_quota_cores: Nova, Some(403),
            "Quota exceeded for cores: Requested 4, but already used 20 of 20 cores"
            => Quota, "nova_quota_exceeded", ["cores"];
        nova_quota_ram: Nova, Some(403),
            "Quota exceeded for ram: Requested 4096, but already used 8192 of 10240 ram"
            => Quota, "nova_quota_exceeded", ["ram"];
        // Pre-Juno Nova (bug 1298131) answered the same text with 413.
        nova_quota_413: Nova, Some(413),
            r#"{"overLimit": {"code": 413, "message": "Quota exceeded for cores: Requested 2, but already used 9 of 10 cores"}}"#
            => Quota, "nova_quota_exceeded", ["cores"];
        // nova exception.py PortLimitExceeded, raised when Neutron refuses Nova a port.
        nova_port_limit: Nova, Some(403),
            r#"{"forbidden": {"code": 403, "message": "Maximum number of ports exceeded"}}"#
            => Quota, "nova_port_limit", ["port"];
        // ERRORS.md: cinder middleware/fault.py:45-79, exception.py:614-649.
        cinder_volume_limit: Cinder, Some(413),
            r#"{"overLimit": {"code": 413, "message": "VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'.", "retryAfter": "0"}}"#
            => Quota, "cinder_volume_limit", ["volumes"];
        cinder_gigabytes: Cinder, Some(413),
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 50G, quota is 1000G and 980G has been consumed."
            => Quota, "cinder_size_quota", ["gigabytes"];
        cinder_other_413: Cinder, Some(413),
            r#"{"overLimit": {"code": 413, "message": "SnapshotLimitExceeded: Maximum number of snapshots allowed (10) exceeded", "retryAfter": "0"}}"#
            => Quota, "over_limit_413", [];
        // ERRORS.md: nova exception.py:1360-1361, scheduler/manager.py:553-554, faults.rst:355-388.
        no_valid_host: NovaFault, Some(500),
            "No valid host was found. There are not enough hosts available."
            => Capacity, "no_valid_host", [];
        // faults.rst:275-287 (no reason), and manager.py:265 (empty reason, trailing space).
        no_valid_host_bare: NovaFault, Some(500), "No valid host was found. "
            => Capacity, "no_valid_host", [];
        // nova exception.py MaxRetriesExceeded.
        retries_exhausted: NovaFault, Some(500),
            "Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance 3b9d2f5e-4f36-4c0a-9c8f-6a0a1b6f7e11."
            => Capacity, "retries_exhausted", [];
        // ERRORS.md: cinder v3/volumes.py:397-399, exception.py:366-372.
        volume_type_not_found: Cinder, Some(404),
            r#"{"itemNotFound": {"code": 404, "message": "Volume type with name ssd2 could not be found."}}"#
            => InvalidSpec, "volume_type_not_found", [];
        // nova exception.py FlavorNotFound / ImageNotFound (GET by id: 404).
        flavor_not_found: Nova, Some(404),
            r#"{"itemNotFound": {"code": 404, "message": "Flavor m1.huge could not be found."}}"#
            => InvalidSpec, "flavor_not_found", [];
        // nova servers.py CREATE_EXCEPTIONS_MSGS for FlavorNotFound / ImageNotFound / KeypairNotFound.
        invalid_flavor_ref: Nova, Some(400),
            r#"{"badRequest": {"code": 400, "message": "Invalid flavorRef provided."}}"#
            => InvalidSpec, "invalid_flavor_ref", [];
        image_not_found: Nova, Some(404),
            "Image 7c1e4b9a-1f0e-4d4b-9a57-2b4f0f6f3e10 could not be found."
            => InvalidSpec, "image_not_found", [];
        cannot_find_image: Nova, Some(400),
            r#"{"badRequest": {"code": 400, "message": "Can not find requested image"}}"#
            => InvalidSpec, "cannot_find_image", [];
        key_name_invalid: Nova, Some(400),
            r#"{"badRequest": {"code": 400, "message": "Invalid key_name provided."}}"#
            => InvalidSpec, "key_name_invalid", [];
        // neutron-lib SubnetNotFound / NetworkNotFound (404).
        subnet_not_found: Neutron, Some(404),
            r#"{"NeutronError": {"type": "SubnetNotFound", "message": "Subnet 9a1c2d3e-0000-4000-8000-000000000001 could not be found.", "detail": ""}}"#
            => InvalidSpec, "subnet_not_found", [];
        network_not_found: Neutron, Some(404),
            r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network 5e1d0a7c-0000-4000-8000-000000000002 could not be found.", "detail": ""}}"#
            => InvalidSpec, "network_not_found", [];
        // nova compute/api.py, raised as InvalidRequest (400).
        availability_zone_unavailable: Nova, Some(400),
            r#"{"badRequest": {"code": 400, "message": "The requested availability zone is not available"}}"#
            => InvalidSpec, "availability_zone_unavailable", [];
        // nova exception.py ComputeHostNotFound (400 on create with a host).
        compute_host_not_found: Nova, Some(400),
            r#"{"badRequest": {"code": 400, "message": "Compute host cmp-17 could not be found."}}"#
            => InvalidSpec, "compute_host_not_found", [];
        // ERRORS.md: neutron-lib exceptions/__init__.py:316-325.
        ip_not_in_subnet: Neutron, Some(400),
            r#"{"NeutronError": {"type": "InvalidIpForSubnet", "message": "IP address 10.7.0.5 is not a valid IP for the specified subnet.", "detail": ""}}"#
            => InvalidSpec, "ip_not_in_subnet", [];
        // ERRORS.md: neutron ipam/exceptions.py:38-39.
        ip_does_not_belong_to_subnet: Neutron, Some(400),
            "IP address 10.7.0.5 does not belong to subnet 9a1c2d3e-0000-4000-8000-000000000001"
            => InvalidSpec, "ip_does_not_belong_to_subnet", [];
        // ERRORS.md: neutron ipam/exceptions.py:34-35.
        ip_already_allocated: Neutron, Some(409),
            r#"{"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "IP address 10.6.0.21 already allocated in subnet 9a1c2d3e-0000-4000-8000-000000000001", "detail": ""}}"#
            => InvalidSpec, "ip_already_allocated", [];
        // The same text for an exact floating IP address taken on the external network.
        floating_ip_already_allocated: Neutron, Some(409),
            "IP address 172.24.4.10 already allocated in subnet 0c4b8d2a-0000-4000-8000-000000000003"
            => InvalidSpec, "ip_already_allocated", [];
        // neutron-lib IpAddressInUse (409).
        ip_in_use: Neutron, Some(409),
            "Unable to complete operation for network 0c4b8d2a-0000-4000-8000-000000000004. The IP address 172.24.4.10 is in use."
            => InvalidSpec, "ip_in_use", [];
        kube_admission_denied: Kubernetes, Some(403),
            r#"admission webhook "validation.machine.cluster.x-k8s.io" denied the request: spec.bootstrap: Required value: expected either spec.bootstrap.dataSecretName or spec.bootstrap.configRef to be populated"#
            => InvalidSpec, "kube_admission_denied", [];
        unauthorized_401: Nova, Some(401),
            r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#
            => Auth, "unauthorized_401", [];
        kube_unauthorized: Kubernetes, Some(401), "Unauthorized" => Auth, "unauthorized_401", [];
        // nova exception.py PolicyNotAuthorized (403).
        forced_host_policy: Nova, Some(403),
            r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."}}"#
            => Auth, "forced_host_policy", [];
        policy_forbids: Neutron, Some(403),
            "Policy doesn't allow create_floatingip to be performed."
            => Auth, "policy_forbids", [];
        kube_forbidden: Kubernetes, Some(403),
            r#"machines.cluster.x-k8s.io is forbidden: User "system:serviceaccount:capstan:capstan" cannot create resource "machines" in API group "cluster.x-k8s.io" in the namespace "tenant-a""#
            => Auth, "forbidden_403", [];
        kube_already_exists: Kubernetes, Some(409),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"machines.cluster.x-k8s.io \"worker-3\" already exists","reason":"AlreadyExists","details":{"name":"worker-3","group":"cluster.x-k8s.io","kind":"machines"},"code":409}"#
            => Conflict, "kube_already_exists", [];
        kube_stale_write: Kubernetes, Some(409),
            r#"Operation cannot be fulfilled on machinedeployments.cluster.x-k8s.io "md-0": the object has been modified; please apply your changes to the latest version and try again"#
            => Transient, "kube_stale_write", [];
        kube_invalid: Kubernetes, Some(422),
            r#"Machine.cluster.x-k8s.io "Worker_3" is invalid: metadata.name: Invalid value: "Worker_3": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"#
            => InvalidSpec, "kube_invalid", [];
        // CAPO openstackmachine_controller.go: instance in ERROR before it had a NodeRef.
        server_went_error: MachineFailure, None,
            r#"Failure detected from referenced resource infrastructure.cluster.x-k8s.io/v1beta1, Kind=OpenStackMachine with name "worker-3": instance state "ERROR" is unexpected"#
            => Transient, "server_went_error", [];
        // CAPO v0.14 conditions_consts.go ServerUnexpectedDeletedMessage, as CAPI v1.12
        // records it on the Machine (the lab showed it under status.deprecated.v1beta1).
        server_deleted_outside: MachineFailure, None,
            r#"Failure detected from referenced resource infrastructure.cluster.x-k8s.io/v1beta1, Kind=OpenStackMachine with name "worker-3": The server was unexpectedly deleted"#
            => Transient, "server_deleted_outside", [];
        nova_unexpected_api_error: Nova, Some(500),
            r#"{"computeFault": {"code": 500, "message": "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.\n<class 'oslo_db.exception.DBConnectionError'>"}}"#
            => Transient, "nova_unexpected_api_error", [];
        db_connection_error: Cinder, None,
            "(oslo_db.exception.DBConnectionError) (pymysql.err.OperationalError) (2003, \"Can't connect to MySQL server on 'controller' ([Errno 111] ECONNREFUSED)\")"
            => Transient, "db_connection_error", [];
        mysql_lost_connection: Neutron, Some(500),
            "(pymysql.err.OperationalError) (2013, 'Lost connection to MySQL server during query')"
            => Transient, "mysql_lost_connection", [];
        messaging_timeout: NovaFault, Some(500),
            "MessagingTimeout: Timed out waiting for a reply to message ID 1c2b6f0a9d4e4d0c8b7a6f5e4d3c2b1a"
            => Transient, "messaging_timeout", [];
        amqp_unreachable: Neutron, Some(500),
            "AMQP server on rabbit-1:5672 is unreachable: [Errno 111] ECONNREFUSED. Trying again in 1 seconds."
            => Transient, "amqp_unreachable", [];
        nova_state_conflict: Nova, Some(409),
            r#"{"conflictingRequest": {"code": 409, "message": "Cannot 'delete' instance 3b9d2f5e-4f36-4c0a-9c8f-6a0a1b6f7e11 while it is in task_state spawning"}}"#
            => Transient, "nova_state_conflict", [];
        connection_refused: Network, None,
            "error sending request for url (https://nova.example:8774/v2.1/servers): client error (Connect): tcp connect error: Connection refused (os error 111)"
            => Transient, "connection_refused", [];
        connection_reset: Network, None,
            "error sending request for url (https://neutron.example:9696/v2.0/ports): connection error: Connection reset by peer (os error 104)"
            => Transient, "connection_reset", [];
        kube_timeout: Kubernetes, None, "operation timed out" => Transient, "timed_out", [];
        kube_too_many_requests: Kubernetes, Some(429), "Too many requests, please try again later."
            => Transient, "retry_later_408_429", [];
        nova_service_unavailable: Nova, Some(503),
            r#"{"serviceUnavailable": {"code": 503, "message": "Service Unavailable"}}"#
            => Transient, "server_error_5xx", [];
        kube_gateway_timeout: Kubernetes, Some(504),
            "the server was unable to return a response in the time allotted, but may still be processing the request"
            => Transient, "server_error_5xx", [];
        kube_internal_error: Kubernetes, Some(500),
            r#"Internal error occurred: failed calling webhook "default.machine.cluster.x-k8s.io": failed to call webhook: Post "https://capi-webhook-service.capi-system.svc:443/mutate": context deadline exceeded"#
            => Transient, "server_error_5xx", [];
        unknown_4xx: Neutron, Some(400),
            r#"{"NeutronError": {"type": "InvalidInput", "message": "Invalid input for operation: 'foo' is not a valid boolean value.", "detail": ""}}"#
            => InvalidSpec, "fallback_4xx", [];
        unknown_without_status: OpenStackServerCondition, None,
            "something nobody has seen before"
            => Transient, "fallback_unrecognised", [];
    }

    #[test]
    fn every_rule_has_a_case_and_a_unique_id() {
        let mut ids = HashSet::new();
        for r in RULES {
            assert!(ids.insert(r.id), "rule id {} used twice", r.id);
            assert!(
                CASE_RULES.contains(&r.id),
                "rule {} has no test case fed with its upstream text",
                r.id
            );
        }
    }

    /// The inner body and its CAPO (gophercloud) and CAPI wrappings, for one case.
    fn wrapped(verb: &str, url: &str, status: u16, body: &str) -> (String, String) {
        let capo = format!(
            "error creating Openstack {verb}: Expected HTTP response code [202] when accessing [POST {url}], but got {status} instead: {body}"
        );
        let capi = format!(
            "Failure detected from referenced resource infrastructure.cluster.x-k8s.io/v1beta1, Kind=OpenStackMachine with name \"worker-3\": {capo}"
        );
        (capo, capi)
    }

    #[test]
    fn capo_and_capi_wrappings_classify_like_their_inner_text() {
        let inner = [
            (
                S::Nova,
                403,
                "instance",
                "http://10.0.0.10:8774/v2.1/servers",
                r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}"#,
            ),
            (
                S::Nova,
                403,
                "instance",
                "http://10.0.0.10/compute/v2.1/servers",
                r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."}}"#,
            ),
            (
                S::Cinder,
                413,
                "volume",
                "http://10.0.0.10:8776/v3/8f3c/volumes",
                r#"{"overLimit": {"code": 413, "message": "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 10G, quota is 1000G and 995G has been consumed.", "retryAfter": "0"}}"#,
            ),
            (
                S::Cinder,
                404,
                "volume",
                "http://10.0.0.10:8776/v3/8f3c/volumes",
                r#"{"itemNotFound": {"code": 404, "message": "Volume type with name ssd2 could not be found."}}"#,
            ),
            (
                S::Neutron,
                409,
                "port",
                "http://10.0.0.10:9696/v2.0/ports",
                r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#,
            ),
            (
                S::Neutron,
                409,
                "port",
                "http://10.0.0.10:9696/v2.0/ports",
                r#"{"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "IP address 10.6.0.21 already allocated in subnet 9a1c2d3e-0000-4000-8000-000000000001", "detail": ""}}"#,
            ),
            (
                S::Nova,
                500,
                "instance",
                "http://10.0.0.10:8774/v2.1/servers",
                r#"{"computeFault": {"code": 500, "message": "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.\n<class 'oslo_db.exception.DBConnectionError'>"}}"#,
            ),
        ];
        for (service, status, verb, url, body) in inner {
            let direct = classify(&Failure::new(service, Some(status), body));
            let (capo, capi) = wrapped(verb, url, status, body);
            for (source, text) in [
                (S::OpenStackServerCondition, capo),
                (S::MachineFailure, capi),
            ] {
                let c = classify(&Failure::new(source, None, text.clone()));
                assert_eq!(
                    (c.class, c.rule, &c.short, c.source, c.status, &c.message),
                    (
                        direct.class,
                        direct.rule,
                        &direct.short,
                        service,
                        Some(status),
                        &direct.message
                    ),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn the_capo_quota_message_from_design_is_quota_for_cores() {
        // DESIGN §4's example, with no spaces in the body, as gophercloud prints it.
        let text = r#"error creating Openstack instance: Expected HTTP response code [202] when accessing [POST http://10.0.0.10:8774/v2.1/servers], but got 403 instead: {"forbidden":{"code":403,"message":"Quota exceeded for cores: Requested 4, but already used 20 of 20 cores"}}"#;
        let c = classify(&Failure::new(S::OpenStackServerCondition, None, text));
        assert_eq!((c.class, c.short.clone()), (C::Quota, vec!["cores".into()]));
        assert_eq!(
            c.message,
            "Quota exceeded for cores: Requested 4, but already used 20 of 20 cores"
        );
    }

    #[test]
    fn a_bare_body_in_a_condition_names_its_service() {
        let neutron = r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#;
        let c = classify(&Failure::new(S::OpenStackServerCondition, None, neutron));
        assert_eq!((c.source, c.status), (S::Neutron, None));
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","code":429}"#;
        let k = classify(&Failure::new(S::Network, None, status));
        assert_eq!(
            (k.source, k.status, k.class),
            (S::Kubernetes, Some(429), C::Transient)
        );
    }

    #[test]
    fn a_403_is_auth_unless_it_is_a_quota() {
        let quota = classify(&Failure::new(
            S::Nova,
            Some(403),
            "Quota exceeded for ram: Requested 4096, but already used 8192 of 10240 ram",
        ));
        let other = classify(&Failure::new(
            S::Nova,
            Some(403),
            "You are not allowed to do this.",
        ));
        assert_eq!((quota.class, other.class), (C::Quota, C::Auth));
    }

    #[test]
    fn a_kubernetes_409_that_is_not_already_exists_is_not_a_conflict() {
        // A 409 neither row knows falls to the 4xx fallback, not to `conflict`.
        let c = classify(&Failure::new(S::Kubernetes, Some(409), "something else"));
        assert_eq!(c.class, C::InvalidSpec);
        // Only Kubernetes' "already exists" is a conflict; Neutron's 409s are not.
        let n = classify(&Failure::new(S::Neutron, Some(409), "x already exists"));
        assert_eq!(n.rule, "fallback_4xx");
    }

    #[test]
    fn several_short_nova_resources_are_all_named() {
        let c = classify(&Failure::new(
            S::Nova,
            Some(403),
            "Quota exceeded for cores, ram: Requested 4, but already used 20 of 20 cores",
        ));
        assert_eq!(c.short, vec!["cores".to_string(), "ram".to_string()]);
        let n = classify(&Failure::new(
            S::Neutron,
            Some(409),
            "Quota exceeded for resources: ['floatingip', 'port'].",
        ));
        assert_eq!(n.short, vec!["floatingip".to_string(), "port".to_string()]);
    }
}
