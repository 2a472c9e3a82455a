//! Workflows as data: `workflows/*.yaml` declare a job kind's node state machine.
//!
//! ```yaml
//! kind: smoke
//! start: prepare
//! concurrency: 4          # node tasks of one job that run at once
//! deadline: 1h            # default job deadline (a request may set its own)
//! retry: {base: 1s, cap: 1m, jitter: 0.2, max_attempts: 10}   # default for every state
//! states:
//!   prepare: {step: smoke.touch, timeout: 30s, on: {ok: settle}}
//!   settle:  {step: smoke.settle, on: {ok: done}, retry: {base: 100ms, cap: 1s, deadline: 5m}}
//!   done:    {end: succeeded}
//! ```
//!
//! Invariant: a workflow that loads is complete. Every state is reachable, every step exists,
//! and every outcome a step can return has a transition, so the runner never meets a state
//! machine it cannot follow. Problems are reported all at once, each naming file and state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::retry::{RetryPolicy, RetrySpec};
use super::step::Registry;
use crate::duration::serde_human_opt;
use crate::model::NodeStatus;

/// The outcome label a state may map for "the retry budget is spent".
pub const EXHAUSTED: &str = "exhausted";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    start: String,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default, with = "serde_human_opt")]
    deadline: Option<Duration>,
    #[serde(default)]
    retry: Option<RetrySpec>,
    states: BTreeMap<String, StateFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    on: BTreeMap<String, String>,
    #[serde(default)]
    retry: Option<RetrySpec>,
    #[serde(default, with = "serde_human_opt")]
    timeout: Option<Duration>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// A validated workflow.
#[derive(Debug)]
pub struct Workflow {
    pub kind: String,
    pub file: String,
    pub start: String,
    pub concurrency: u32,
    pub deadline: Option<Duration>,
    pub states: HashMap<String, State>,
}

#[derive(Debug)]
pub struct State {
    pub name: String,
    pub action: Action,
    /// Outcome label → next state.
    pub on: HashMap<String, String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Action {
    Step(String),
    /// A terminal state: the node ends with this status.
    End(NodeStatus),
}

impl Workflow {
    pub fn state(&self, name: &str) -> Option<&State> {
        self.states.get(name)
    }
}

/// Every problem found while loading workflows, one per line.
#[derive(Debug, thiserror::Error)]
#[error("refusing to start, the workflows are not valid:\n{}", .0.join("\n"))]
pub struct WorkflowErrors(pub Vec<String>);

const DEFAULT_CONCURRENCY: u32 = 5;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Loads and validates `(file name, YAML text)` pairs against the registered steps.
pub fn load_all(
    sources: &[(String, String)],
    registry: &Registry,
) -> Result<HashMap<String, Arc<Workflow>>, WorkflowErrors> {
    let mut problems = Vec::new();
    let mut out: HashMap<String, Arc<Workflow>> = HashMap::new();
    for (file, text) in sources {
        match load_one(file, text, registry) {
            Ok(wf) => {
                if let Some(prev) = out.get(&wf.kind) {
                    problems.push(format!(
                        "{file}: kind `{}` is already defined by {}",
                        wf.kind, prev.file
                    ));
                } else {
                    out.insert(wf.kind.clone(), Arc::new(wf));
                }
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(WorkflowErrors(problems))
    }
}

/// Reads every `*.yaml` file of a directory as `(file name, text)`, sorted by name.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push((path.display().to_string(), std::fs::read_to_string(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

fn load_one(file: &str, text: &str, registry: &Registry) -> Result<Workflow, Vec<String>> {
    let parsed: WorkflowFile =
        serde_yaml::from_str(text).map_err(|e| vec![format!("{file}: {e}")])?;
    let mut problems = Vec::new();
    macro_rules! p {
        ($state:expr, $problem:expr $(,)?) => {
            problems.push(format!("{file}: state `{}`: {}", $state, $problem))
        };
    }
    if !parsed.states.contains_key(&parsed.start) {
        problems.push(format!(
            "{file}: start state `{}` is not defined",
            parsed.start
        ));
    }
    let default_retry = parsed.retry.clone().unwrap_or_default();
    if let Err(e) = default_retry.check() {
        problems.push(format!("{file}: retry: {e}"));
    }
    let mut states = HashMap::new();
    for (name, s) in &parsed.states {
        let action = match (&s.step, &s.end) {
            (Some(step), None) => Action::Step(step.clone()),
            (None, Some(end)) => match end.as_str() {
                "succeeded" => Action::End(NodeStatus::Succeeded),
                "failed" => Action::End(NodeStatus::Failed),
                other => {
                    p!(
                        name,
                        format!("end `{other}` is not one of: succeeded, failed")
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                p!(
                    name,
                    "has both `step` and `end`; a state either runs a step or ends"
                );
                continue;
            }
            (None, None) => {
                p!(name, "has neither `step` nor `end`");
                continue;
            }
        };
        for (label, target) in &s.on {
            if !parsed.states.contains_key(target) {
                p!(
                    name,
                    format!("outcome `{label}` goes to `{target}`, which is not defined")
                );
            }
        }
        match &action {
            Action::Step(step) => match registry.step_def(step) {
                None => p!(
                    name,
                    format!(
                        "step `{step}` is not registered (registered: {})",
                        registry.step_names().join(", ")
                    ),
                ),
                Some(def) => {
                    for outcome in &def.outcomes {
                        if !s.on.contains_key(*outcome) {
                            p!(
                                name,
                                format!("outcome `{outcome}` of step `{step}` has no transition")
                            );
                        }
                    }
                    for label in s.on.keys() {
                        if label != EXHAUSTED && !def.outcomes.contains(&label.as_str()) {
                            p!(
                                name,
                                format!(
                                    "transition on `{label}`, which step `{step}` never returns (it returns: {})",
                                    def.outcomes.join(", ")
                                ),
                            );
                        }
                    }
                }
            },
            Action::End(_) => {
                if !s.on.is_empty() || s.retry.is_some() || s.timeout.is_some() {
                    p!(name, "an end state takes no `on`, `retry` or `timeout`");
                }
            }
        }
        let retry = s
            .retry
            .clone()
            .map(|r| r.over(&default_retry))
            .unwrap_or_else(|| default_retry.clone());
        if let Err(e) = retry.check() {
            p!(name, format!("retry: {e}"));
        }
        states.insert(
            name.clone(),
            State {
                name: name.clone(),
                action,
                on: s.on.clone().into_iter().collect(),
                retry: retry.policy(),
                timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
            },
        );
    }
    // Reachability from the start state, over every transition.
    let mut seen = BTreeSet::new();
    let mut todo = vec![parsed.start.clone()];
    while let Some(s) = todo.pop() {
        if seen.insert(s.clone())
            && let Some(st) = parsed.states.get(&s)
        {
            todo.extend(st.on.values().cloned());
        }
    }
    for name in parsed.states.keys() {
        if !seen.contains(name) {
            problems.push(format!(
                "{file}: state `{name}`: unreachable from the start state `{}`",
                parsed.start
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Workflow {
        kind: parsed.kind,
        file: file.to_string(),
        start: parsed.start,
        concurrency: parsed.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
        deadline: parsed.deadline,
        states,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::step::{Outcome, Registry};

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.step("t.a", &["ok", "gone"], |_ctx| async {
            Ok(Outcome::next("ok"))
        });
        r.step("t.b", &["ok"], |_ctx| async { Ok(Outcome::next("ok")) });
        r
    }

    fn load(text: &str) -> Result<HashMap<String, Arc<Workflow>>, WorkflowErrors> {
        load_all(&[("workflows/t.yaml".into(), text.into())], &registry())
    }

    #[test]
    fn a_complete_workflow_loads() {
        let wf = load(
            "kind: t\nstart: a\nstates:\n  a: {step: t.a, on: {ok: b, gone: done}}\n  b: {step: t.b, on: {ok: done, exhausted: broken}}\n  done: {end: succeeded}\n  broken: {end: failed}\n",
        )
        .unwrap();
        assert_eq!(wf["t"].states.len(), 4);
    }

    #[test]
    fn an_unknown_step_is_refused_naming_file_and_state() {
        let e = load("kind: t\nstart: a\nstates:\n  a: {step: t.nope, on: {ok: done}}\n  done: {end: succeeded}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workflows/t.yaml: state `a`: step `t.nope` is not registered"),
            "{e}"
        );
    }

    #[test]
    fn an_outcome_without_transition_and_an_unreachable_state_are_refused() {
        let e = load(
            "kind: t\nstart: a\nstates:\n  a: {step: t.a, on: {ok: done}}\n  orphan: {step: t.b, on: {ok: done}}\n  done: {end: succeeded}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("state `a`: outcome `gone` of step `t.a` has no transition"),
            "{e}"
        );
        assert!(
            e.contains("state `orphan`: unreachable from the start state `a`"),
            "{e}"
        );
    }

    #[test]
    fn transitions_to_nowhere_and_bad_retry_are_refused() {
        let e = load(
            "kind: t\nstart: a\nstates:\n  a: {step: t.b, on: {ok: nowhere, bogus: a}, retry: {base: 10s, cap: 1s}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("outcome `ok` goes to `nowhere`, which is not defined"),
            "{e}"
        );
        assert!(
            e.contains("transition on `bogus`, which step `t.b` never returns"),
            "{e}"
        );
        assert!(e.contains("base 10s is above cap 1s"), "{e}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let e = load("kind: t\nstart: a\nstates:\n  a: {stepp: t.b}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `stepp`"), "{e}");
    }
}
