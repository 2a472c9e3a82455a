//! The exit codes of the client commands: one per outcome a script tells apart, so that
//! `capstan jobs watch ID && next-step` and a `case $?` both work. Errors carry a [`Failure`]
//! inside `anyhow::Error`; [`code_of`] finds it again at the end of `main`.

use reqwest::StatusCode;

/// The job finished as `failed`.
pub const JOB_FAILED: u8 = 3;
/// The job finished as `cancelled`.
pub const JOB_CANCELLED: u8 = 4;
/// The job waits for an operator: amend its nodes, then resume.
pub const JOB_NEEDS_INPUT: u8 = 5;
/// The server answered 404: no such job or schedule, or not the caller's to see.
pub const NOT_FOUND: u8 = 6;
/// The server refused the request with another 4xx (invalid, conflicting, not allowed).
pub const REFUSED: u8 = 7;
/// The server could not be reached, went away, or answered 5xx: worth retrying later.
pub const UNAVAILABLE: u8 = 8;
/// `jobs wait --timeout` passed before the job got there.
pub const TIMED_OUT: u8 = 9;
/// clap's own code for a usage error; an ambiguous job ID prefix is one too.
pub const USAGE: u8 = 2;

/// The table as the CLI's long help shows it (and README repeats).
pub const HELP: &str = "Durable jobs for the worker nodes of Cluster API clusters on OpenStack.

Exit codes of the client commands (jobs, schedules, nodes, quota, clusters, catalog):
  0  succeeded (for `jobs watch`, `wait`, `events -f`: the job succeeded)
  1  any other error (a file that cannot be read, no token)
  2  usage error (a wrong flag or argument, a job ID prefix that names several jobs)
  3  the job failed (`jobs watch`, `wait`, `events -f`)
  4  the job was cancelled (`jobs watch`, `wait`, `events -f`)
  5  the job needs input: amend its nodes, then `jobs resume` (`jobs watch`, `wait`)
  6  not found (404): no such job, schedule or cluster, or not yours to see
  7  refused (another 4xx): the request is invalid, conflicts, or is not allowed
  8  the server is unreachable or answered 5xx (streams first reconnect for --reconnect-for)
  9  `jobs wait --timeout` passed first";

/// Why a client command did not succeed, in the terms its exit code distinguishes.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("job {0} failed")]
    JobFailed(String),
    #[error("job {0} was cancelled")]
    JobCancelled(String),
    #[error("job {0} needs input: amend its nodes, then `capstan jobs resume {0}`")]
    JobNeedsInput(String),
    /// No job the caller may see has an ID starting so.
    #[error("no job found whose ID starts with `{0}`")]
    NoSuchJob(String),
    /// Several jobs' IDs start with what was typed.
    #[error("`{prefix}` names {} jobs: {}; type more of the ID", candidates.len(), candidates.join(", "))]
    AmbiguousPrefix {
        prefix: String,
        candidates: Vec<String>,
    },
    /// The command line names something the wrong way (found before any request).
    #[error("{0}")]
    Usage(String),
    /// The server stayed unreachable for as long as the command was told to keep trying.
    #[error("the server at {url} has been unreachable for {secs} s; gave up: {last}")]
    GaveUp {
        url: String,
        secs: u64,
        last: String,
    },
    #[error("job {id} did not get there within {secs} s (it is {state})")]
    TimedOut {
        id: String,
        secs: u64,
        state: String,
    },
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Answered { status: StatusCode, message: String },
}

/// How `jobs watch` ends for a job in `state`: `None` while it can still move by itself.
pub fn job_end(id: &str, state: &str) -> Option<Result<(), Failure>> {
    match state {
        "succeeded" => Some(Ok(())),
        "failed" => Some(Err(Failure::JobFailed(id.to_string()))),
        "cancelled" => Some(Err(Failure::JobCancelled(id.to_string()))),
        "needs_input" => Some(Err(Failure::JobNeedsInput(id.to_string()))),
        _ => None,
    }
}

/// How a wait for a *finished* job ends (`jobs wait --for terminal`, `jobs events -f`): a
/// job needing input is not finished; an operator may amend and resume it.
pub fn finished(id: &str, state: &str) -> Option<Result<(), Failure>> {
    if state == "needs_input" {
        None
    } else {
        job_end(id, state)
    }
}

/// Whether an error means the server was not there (to reconnect after), not that it said no.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    code_of(e) == UNAVAILABLE
}

/// The exit code for an error a client command returned.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return match f {
            Failure::JobFailed(_) => JOB_FAILED,
            Failure::JobCancelled(_) => JOB_CANCELLED,
            Failure::JobNeedsInput(_) => JOB_NEEDS_INPUT,
            Failure::NoSuchJob(_) => NOT_FOUND,
            Failure::AmbiguousPrefix { .. } | Failure::Usage(_) => USAGE,
            Failure::GaveUp { .. } => UNAVAILABLE,
            Failure::TimedOut { .. } => TIMED_OUT,
            Failure::Answered { status, .. } if *status == StatusCode::NOT_FOUND => NOT_FOUND,
            Failure::Answered { status, .. } if status.is_client_error() => REFUSED,
            Failure::Answered { .. } => UNAVAILABLE,
        };
    }
    // Connecting, sending or reading the answer failed: the server is not there (any more).
    if e.downcast_ref::<reqwest::Error>().is_some() {
        return UNAVAILABLE;
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> anyhow::Error {
        Failure::Answered {
            status: StatusCode::from_u16(status).unwrap(),
            message: String::new(),
        }
        .into()
    }

    #[test]
    fn each_answer_has_its_code() {
        assert_eq!(code_of(&answered(404)), NOT_FOUND);
        assert_eq!(code_of(&answered(422)), REFUSED);
        assert_eq!(code_of(&answered(409)), REFUSED);
        assert_eq!(code_of(&answered(503)), UNAVAILABLE);
        assert_eq!(code_of(&answered(500)), UNAVAILABLE);
        assert_eq!(code_of(&anyhow::anyhow!("reading job.json")), 1);
        let ambiguous = Failure::AmbiguousPrefix {
            prefix: "01".into(),
            candidates: vec!["01a".into(), "01b".into()],
        };
        assert_eq!(code_of(&ambiguous.into()), USAGE);
        assert_eq!(code_of(&Failure::NoSuchJob("01".into()).into()), NOT_FOUND);
    }
}
