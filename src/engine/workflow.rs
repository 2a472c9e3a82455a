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
//! A workflow may **include** another by its kind instead of copying its states:
//!
//! ```yaml
//! kind: repair
//! start: check
//! include:
//!   - {workflow: delete_nodes, then: {done: quota}}   # delete_nodes' states, its end → quota
//!   - {workflow: scale_out, then: {done: done}}       # scale_out's states, its end → done
//! states:
//!   check: {step: repair.check, on: {unhealthy: mark, healthy: done}}
//!   done:  {end: succeeded}
//! ```
//!
//! An included workflow's states join the including one under their own names — the names
//! in-flight node tasks have stored, so splicing a copy out for an include changes nothing
//! for them — with their own steps, transitions, timeouts and retry overrides. Its end
//! states are not copied: `then` must send each of them to a state of the including
//! workflow, and every transition into one goes there instead. What belongs to the whole
//! included file (`start`, `concurrency`, `deadline`, its default `retry`) does not come
//! along; its states fall back to the including file's default `retry`. Includes nest; a
//! cycle, an unknown kind, an unmapped end state and a state name defined twice are
//! refused like any other problem, naming the file and the include or state.
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
    #[serde(default)]
    include: Vec<Include>,
    states: BTreeMap<String, StateFile>,
}

/// Another workflow's states, spliced in by reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    /// The included workflow's kind.
    workflow: String,
    /// Each end state of the included workflow → the state of this one it leads to.
    #[serde(default)]
    then: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, PartialEq)]
pub struct State {
    pub name: String,
    pub action: Action,
    /// Outcome label → next state.
    pub on: HashMap<String, String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
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

/// The parsed files by kind (the first file of each kind), for includes to find.
type Library<'a> = BTreeMap<&'a str, &'a WorkflowFile>;

/// Loads and validates `(file name, YAML text)` pairs against the registered steps.
pub fn load_all(
    sources: &[(String, String)],
    registry: &Registry,
) -> Result<HashMap<String, Arc<Workflow>>, WorkflowErrors> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for (file, text) in sources {
        match serde_yaml::from_str::<WorkflowFile>(text) {
            Ok(wf) => parsed.push((file.as_str(), wf)),
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    let mut library: Library = BTreeMap::new();
    let mut first_file: HashMap<&str, &str> = HashMap::new();
    for (file, wf) in &parsed {
        library.entry(wf.kind.as_str()).or_insert(wf);
        first_file.entry(wf.kind.as_str()).or_insert(file);
    }
    let mut out: HashMap<String, Arc<Workflow>> = HashMap::new();
    for (file, wf) in &parsed {
        match build(file, wf, &library, registry) {
            Ok(_) if first_file[wf.kind.as_str()] != *file => problems.push(format!(
                "{file}: kind `{}` is already defined by {}",
                wf.kind,
                first_file[wf.kind.as_str()]
            )),
            Ok(built) => {
                out.insert(built.kind.clone(), Arc::new(built));
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

/// The problems found in one file, each naming it (and the state, where there is one).
struct Problems<'a> {
    file: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn file(&mut self, problem: impl std::fmt::Display) {
        self.list.push(format!("{}: {problem}", self.file));
    }

    fn state(&mut self, state: &str, problem: impl std::fmt::Display) {
        self.list
            .push(format!("{}: state `{state}`: {problem}", self.file));
    }
}

/// Validates one parsed file, its includes spliced in, into a workflow.
fn build(
    file: &str,
    wf: &WorkflowFile,
    library: &Library,
    registry: &Registry,
) -> Result<Workflow, Vec<String>> {
    let mut problems = Problems {
        file,
        list: Vec::new(),
    };
    let states = match expand(wf, library, &mut vec![wf.kind.clone()]) {
        Ok(states) => states,
        Err(list) => {
            for p in list {
                problems.file(p);
            }
            return Err(problems.list);
        }
    };
    if !states.contains_key(&wf.start) {
        problems.file(format!("start state `{}` is not defined", wf.start));
    }
    let default_retry = wf.retry.clone().unwrap_or_default();
    if let Err(e) = default_retry.check() {
        problems.file(format!("retry: {e}"));
    }
    let mut built = HashMap::new();
    for (name, s) in &states {
        if let Some(state) = build_state(name, s, &states, &default_retry, registry, &mut problems)
        {
            built.insert(name.clone(), state);
        }
    }
    let reached = reachable(&wf.start, &states);
    for name in states.keys().filter(|n| !reached.contains(*n)) {
        problems.state(
            name,
            format!("unreachable from the start state `{}`", wf.start),
        );
    }
    if !problems.list.is_empty() {
        return Err(problems.list);
    }
    Ok(Workflow {
        kind: wf.kind.clone(),
        file: file.to_string(),
        start: wf.start.clone(),
        concurrency: wf.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
        deadline: wf.deadline,
        states: built,
    })
}

/// A file's states with its includes spliced in (recursively; `stack` holds the kinds
/// being expanded, to refuse a cycle). Problems are returned without the file's name.
fn expand(
    wf: &WorkflowFile,
    library: &Library,
    stack: &mut Vec<String>,
) -> Result<BTreeMap<String, StateFile>, Vec<String>> {
    let mut problems = Vec::new();
    let mut states = wf.states.clone();
    // Where each state came from, to name both sides of a clash.
    let mut origin: BTreeMap<String, String> = states
        .keys()
        .map(|n| (n.clone(), "this file".to_string()))
        .collect();
    for inc in &wf.include {
        let name = &inc.workflow;
        let Some(sub) = library.get(name.as_str()) else {
            problems.push(format!(
                "include `{name}`: no workflow has that kind (known: {})",
                library.keys().copied().collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        if stack.contains(name) {
            problems.push(format!(
                "include `{name}` closes a cycle ({} → {name})",
                stack.join(" → ")
            ));
            continue;
        }
        stack.push(name.clone());
        let expanded = expand(sub, library, stack);
        stack.pop();
        let sub_states = match expanded {
            Ok(s) => s,
            Err(list) => {
                problems.extend(list.into_iter().map(|p| format!("include `{name}`: {p}")));
                continue;
            }
        };
        let ends: BTreeSet<&String> = sub_states
            .iter()
            .filter(|(_, s)| s.end.is_some())
            .map(|(n, _)| n)
            .collect();
        for end in ends.iter().filter(|e| !inc.then.contains_key(**e)) {
            problems.push(format!(
                "include `{name}`: its end state `{end}` is not mapped; `then` must send it to a state of this workflow"
            ));
        }
        for key in inc.then.keys().filter(|k| !ends.contains(k)) {
            problems.push(format!(
                "include `{name}`: `then` maps `{key}`, which is not an end state of `{name}`"
            ));
        }
        for (state, s) in sub_states.into_iter().filter(|(_, s)| s.end.is_none()) {
            if let Some(first) = origin.get(&state) {
                problems.push(format!(
                    "state `{state}`: defined both by {first} and by include `{name}`"
                ));
                continue;
            }
            let mut s = s;
            for target in s.on.values_mut() {
                if let Some(to) = inc.then.get(target) {
                    *target = to.clone();
                }
            }
            origin.insert(state.clone(), format!("include `{name}`"));
            states.insert(state, s);
        }
    }
    if problems.is_empty() {
        Ok(states)
    } else {
        Err(problems)
    }
}

/// Checks one state against the others and the registry; `None` if it cannot be built.
fn build_state(
    name: &str,
    s: &StateFile,
    states: &BTreeMap<String, StateFile>,
    default_retry: &RetrySpec,
    registry: &Registry,
    problems: &mut Problems,
) -> Option<State> {
    let action = match (&s.step, &s.end) {
        (Some(step), None) => Action::Step(step.clone()),
        (None, Some(end)) => match end.as_str() {
            "succeeded" => Action::End(NodeStatus::Succeeded),
            "failed" => Action::End(NodeStatus::Failed),
            other => {
                problems.state(
                    name,
                    format!("end `{other}` is not one of: succeeded, failed"),
                );
                return None;
            }
        },
        (Some(_), Some(_)) => {
            problems.state(
                name,
                "has both `step` and `end`; a state either runs a step or ends",
            );
            return None;
        }
        (None, None) => {
            problems.state(name, "has neither `step` nor `end`");
            return None;
        }
    };
    for (label, target) in &s.on {
        if !states.contains_key(target) {
            problems.state(
                name,
                format!("outcome `{label}` goes to `{target}`, which is not defined"),
            );
        }
    }
    match &action {
        Action::Step(step) => check_outcomes(name, step, s, registry, problems),
        Action::End(_) => {
            if !s.on.is_empty() || s.retry.is_some() || s.timeout.is_some() {
                problems.state(name, "an end state takes no `on`, `retry` or `timeout`");
            }
        }
    }
    let retry = s
        .retry
        .clone()
        .map(|r| r.over(default_retry))
        .unwrap_or_else(|| default_retry.clone());
    if let Err(e) = retry.check() {
        problems.state(name, format!("retry: {e}"));
    }
    Some(State {
        name: name.to_string(),
        action,
        on: s.on.clone().into_iter().collect(),
        retry: retry.policy(),
        timeout: s.timeout.unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// The step exists, each outcome it declares has a transition, and each transition is on
/// an outcome it declares (or on the retry budget running out).
fn check_outcomes(
    name: &str,
    step: &str,
    s: &StateFile,
    registry: &Registry,
    problems: &mut Problems,
) {
    let Some(def) = registry.step_def(step) else {
        problems.state(
            name,
            format!(
                "step `{step}` is not registered (registered: {})",
                registry.step_names().join(", ")
            ),
        );
        return;
    };
    for outcome in &def.outcomes {
        if !s.on.contains_key(*outcome) {
            problems.state(
                name,
                format!("outcome `{outcome}` of step `{step}` has no transition"),
            );
        }
    }
    for label in s.on.keys() {
        if label != EXHAUSTED && !def.outcomes.contains(&label.as_str()) {
            problems.state(
                name,
                format!(
                    "transition on `{label}`, which step `{step}` never returns (it returns: {})",
                    def.outcomes.join(", ")
                ),
            );
        }
    }
}

/// The states reachable from `start` over every transition.
fn reachable(start: &str, states: &BTreeMap<String, StateFile>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(s) = todo.pop() {
        if seen.insert(s.clone())
            && let Some(st) = states.get(&s)
        {
            todo.extend(st.on.values().cloned());
        }
    }
    seen
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

    /// A registry with the built-in kinds' step names and outcomes (the steps themselves
    /// need a cloud; loading only reads names and outcomes).
    fn builtin_step_names() -> Registry {
        let mut r = Registry::new();
        for (step, outcomes) in [
            ("repair.check", &["unhealthy", "healthy"][..]),
            ("delete.mark", &["ok"]),
            ("delete.wait", &["gone", "force"]),
            ("delete.force", &["ok"]),
            ("delete.release", &["ok"]),
            ("scale_out.quota", &["ok"]),
            ("scale_out.create", &["ok", "failed"]),
            ("scale_out.provision", &["ready", "failed"]),
            ("scale_out.floating_ip", &["ok", "failed"]),
            ("scale_out.join", &["ok", "failed"]),
            ("scale_out.cleanup", &["retry"]),
        ] {
            r.step(step, outcomes, |_ctx| async { Ok(Outcome::next("ok")) });
        }
        r
    }

    fn builtin(files: &[(&str, &str)]) -> HashMap<String, Arc<Workflow>> {
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        load_all(&sources, &builtin_step_names()).unwrap()
    }

    /// In-flight repair jobs have their nodes' state names stored: the repair workflow made
    /// of includes must be exactly the one that copied delete_nodes' and scale_out's states.
    #[test]
    fn repair_by_includes_equals_repair_by_copies() {
        let included = builtin(&[
            (
                "workflows/delete_nodes.yaml",
                include_str!("../../workflows/delete_nodes.yaml"),
            ),
            (
                "workflows/scale_out.yaml",
                include_str!("../../workflows/scale_out.yaml"),
            ),
            (
                "workflows/repair.yaml",
                include_str!("../../workflows/repair.yaml"),
            ),
        ]);
        let copied = builtin(&[(
            "repair_before_includes.yaml",
            include_str!("testdata/repair_before_includes.yaml"),
        )]);
        let (new, old) = (&included["repair"], &copied["repair"]);
        assert_eq!(
            (&new.start, new.concurrency, new.deadline),
            (&old.start, old.concurrency, old.deadline)
        );
        let names = |wf: &Workflow| wf.states.keys().cloned().collect::<BTreeSet<_>>();
        assert_eq!(names(new), names(old));
        assert_eq!(
            names(new),
            [
                "check",
                "mark",
                "wait",
                "force",
                "release",
                "quota",
                "create",
                "provision",
                "floating_ip",
                "join",
                "cleanup",
                "done"
            ]
            .map(String::from)
            .into()
        );
        for (name, state) in &old.states {
            assert_eq!(new.states[name], *state, "state `{name}`");
        }
    }

    #[test]
    fn an_include_splices_states_in_and_sends_its_end_states_where_then_says() {
        let wf = load_files(&[
            "kind: sub\nstart: s1\nretry: {base: 5s, cap: 10s}\nstates:\n  s1: {step: t.a, on: {ok: s2, gone: fin}}\n  s2: {step: t.b, timeout: 9s, on: {ok: fin}}\n  fin: {end: succeeded}\n",
            "kind: top\nstart: a\nretry: {base: 2s, cap: 4s}\ninclude:\n  - {workflow: sub, then: {fin: done}}\nstates:\n  a: {step: t.b, on: {ok: s1}}\n  done: {end: succeeded}\n",
        ])
        .unwrap();
        let top = &wf["top"];
        let mut names: Vec<&String> = top.states.keys().collect();
        names.sort();
        assert_eq!(names, ["a", "done", "s1", "s2"]);
        assert_eq!(top.states["s1"].on["gone"], "done");
        assert_eq!(top.states["s2"].on["ok"], "done");
        assert_eq!(top.states["s2"].timeout, Duration::from_secs(9));
        // The included file's default retry stays with it; its states take the includer's.
        assert_eq!(top.states["s1"].retry.base, Duration::from_secs(2));
        assert_eq!(wf["sub"].states["s1"].retry.base, Duration::from_secs(5));
    }

    fn load_files(texts: &[&str]) -> Result<HashMap<String, Arc<Workflow>>, WorkflowErrors> {
        let sources: Vec<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("workflows/{i}.yaml"), t.to_string()))
            .collect();
        load_all(&sources, &registry())
    }

    #[test]
    fn an_include_cycle_is_refused_naming_each_file_and_the_cycle() {
        let e = load_files(&[
            "kind: x\nstart: a\ninclude: [{workflow: y, then: {end_y: end_x}}]\nstates:\n  a: {step: t.b, on: {ok: end_x}}\n  end_x: {end: succeeded}\n",
            "kind: y\nstart: b\ninclude: [{workflow: x, then: {end_x: end_y}}]\nstates:\n  b: {step: t.b, on: {ok: end_y}}\n  end_y: {end: succeeded}\n",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("workflows/0.yaml: include `y`: include `x` closes a cycle (x → y → x)"),
            "{e}"
        );
        assert!(
            e.contains("workflows/1.yaml: include `x`: include `y` closes a cycle (y → x → y)"),
            "{e}"
        );
    }

    #[test]
    fn a_state_name_defined_twice_is_refused_naming_file_state_and_both_origins() {
        let sub = "kind: sub\nstart: a\nstates:\n  a: {step: t.b, on: {ok: fin}}\n  fin: {end: succeeded}\n";
        let e = load_files(&[
            sub,
            "kind: top\nstart: a\ninclude: [{workflow: sub, then: {fin: done}}]\nstates:\n  a: {step: t.b, on: {ok: done}}\n  done: {end: succeeded}\n",
            "kind: two\nstart: b\ninclude: [{workflow: sub, then: {fin: done}}, {workflow: sub, then: {fin: done}}]\nstates:\n  b: {step: t.b, on: {ok: a}}\n  done: {end: succeeded}\n",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "workflows/1.yaml: state `a`: defined both by this file and by include `sub`"
            ),
            "{e}"
        );
        assert!(
            e.contains(
                "workflows/2.yaml: state `a`: defined both by include `sub` and by include `sub`"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_include_and_an_unmapped_end_state_are_refused() {
        let e = load_files(&[
            "kind: sub\nstart: a\nstates:\n  a: {step: t.a, on: {ok: fin, gone: lost}}\n  fin: {end: succeeded}\n  lost: {end: failed}\n",
            "kind: top\nstart: a\ninclude: [{workflow: sub, then: {fin: done, a: done}}, {workflow: nope}]\nstates:\n  done: {end: succeeded}\n",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("workflows/1.yaml: include `sub`: its end state `lost` is not mapped"),
            "{e}"
        );
        assert!(
            e.contains("workflows/1.yaml: include `sub`: `then` maps `a`, which is not an end state of `sub`"),
            "{e}"
        );
        assert!(
            e.contains(
                "workflows/1.yaml: include `nope`: no workflow has that kind (known: sub, top)"
            ),
            "{e}"
        );
    }
}
