//! How the CLI prints the API's JSON: as the JSON itself, as YAML, or as tables a human reads
//! (`wide` adds columns; `--no-headers` leaves the header row out for `awk` and `cut`).

use std::fmt::Write;

use serde_json::Value;

/// The `-o` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for a human.
    Table,
    /// More columns.
    Wide,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub wide: bool,
    pub headers: bool,
}

/// Prints `v` in `format`; `human` renders the table forms.
pub fn print(
    format: Format,
    headers: bool,
    v: &Value,
    human: impl FnOnce(&Value, Layout) -> String,
) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Format::Yaml => print!("{}", serde_yaml::to_string(v).unwrap_or_default()),
        Format::Table | Format::Wide => print!(
            "{}",
            human(
                v,
                Layout {
                    wide: format == Format::Wide,
                    headers,
                }
            )
        ),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// A scalar as a cell: strings bare, null as `-`, the rest as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, widths from the content; the header row unless `headers` is off.
pub fn table(header: &[&str], rows: &[Vec<String>], headers: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                let _ = write!(out, "{c}{:pad$}  ", "");
            }
        }
        out.push('\n');
    };
    if headers {
        line(header.to_vec(), &mut out);
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A job with its nodes; `failures` are the lines of [`failure_summary`], if any.
pub fn job(j: &Value, layout: Layout, failures: &[String]) -> String {
    let mut out = format!(
        "job {}  {}  {}  {}\ntenant {}  owner {}  created {}",
        s(&j["id"]),
        s(&j["kind"]),
        s(&j["cluster"]),
        s(&j["state"]),
        s(&j["tenant"]),
        s(&j["owner"]),
        s(&j["created_at"])
    );
    if let Some(d) = j["deadline"].as_str() {
        let _ = write!(out, "  deadline {d}");
    }
    out.push('\n');
    if let Some(nodes) = j["nodes"].as_array() {
        out.push('\n');
        out.push_str(&nodes_table(nodes, layout));
    }
    if !failures.is_empty() {
        out.push_str("\nwhy it failed:\n");
        for f in failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}

/// How many times the cloud was asked to make the node (scale_out records one per Machine
/// it creates); `None` for nodes no attempt made (deleted, repaired in place) — the one
/// attempts counter the CLI shows. The API's `attempt` counts failures of the current step
/// under its retry policy and `attempts_total` every step run: neither reads as "tries".
fn cloud_attempts(n: &Value) -> Option<u64> {
    n["external_ids"]["attempts"].as_u64()
}

pub fn nodes_table(nodes: &[Value], layout: Layout) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let detail = match (&n["wait"], n["last_error"].as_str()) {
                (w, _) if w.is_object() => {
                    let until = w["until"]
                        .as_str()
                        .map(|u| format!(" (until {u})"))
                        .unwrap_or_default();
                    format!("{}{until}", s(&w["reason"]))
                }
                (_, Some(e)) => format!("{}: {e}", s(&n["failure_class"])),
                _ => String::new(),
            };
            let mut row = vec![
                s(&n["name"]).to_string(),
                s(&n["state"]).to_string(),
                s(&n["status"]).to_string(),
                cloud_attempts(n).map_or("-".into(), |a| a.to_string()),
            ];
            if layout.wide {
                row.push(cell(&n["attempts_total"]));
                row.push(cell(&n["updated_at"]));
            }
            row.push(detail);
            row
        })
        .collect();
    let mut header = vec!["NODE", "STATE", "STATUS", "ATTEMPTS"];
    if layout.wide {
        header.extend(["STEP RUNS", "UPDATED"]);
    }
    header.push("WAITING FOR / LAST ERROR");
    table(&header, &rows, layout.headers)
}

pub fn job_list(page: &Value, layout: Layout) -> String {
    let rows: Vec<Vec<String>> = page["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    let mut row = vec![
                        s(&j["id"]).to_string(),
                        s(&j["kind"]).to_string(),
                        s(&j["cluster"]).to_string(),
                        s(&j["state"]).to_string(),
                        s(&j["tenant"]).to_string(),
                        s(&j["created_at"]).to_string(),
                    ];
                    if layout.wide {
                        row.extend([
                            s(&j["owner"]).to_string(),
                            s(&j["finished_at"]).to_string(),
                            s(&j["schedule_id"]).to_string(),
                        ]);
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    let mut header = vec!["ID", "KIND", "CLUSTER", "STATE", "TENANT", "CREATED"];
    if layout.wide {
        header.extend(["OWNER", "FINISHED", "SCHEDULE"]);
    }
    table(&header, &rows, layout.headers)
}

pub fn event_line(e: &Value) -> String {
    let mut out = format!("{}  {:<14}", s(&e["at"]), s(&e["kind"]));
    let head = out.len();
    if let Some(n) = e["node"].as_str() {
        let _ = write!(out, " {n}");
    }
    if let (Some(f), Some(t)) = (e["from"].as_str(), e["to"].as_str()) {
        let _ = write!(out, " {f} -> {t}");
    }
    // The API's `attempt`: which try of the current step this was under its retry policy
    // (not a cloud attempt to make the node, which scale_out notes as "attempt N").
    if let Some(a) = e["attempt"].as_i64() {
        let _ = write!(out, " step try {a}");
    }
    if let Some(c) = e["class"].as_str() {
        let _ = write!(out, " [{c}]");
    }
    if let Some(m) = e["message"].as_str() {
        // A job-level event has nothing between its kind and its message.
        let sep = if out.len() == head { " " } else { ": " };
        let _ = write!(out, "{sep}{m}");
    }
    out
}

pub fn events(page: &Value, _layout: Layout) -> String {
    let mut out = String::new();
    for e in page["events"].as_array().into_iter().flatten() {
        out.push_str(&event_line(e));
        out.push('\n');
    }
    out
}

/// Whether an event records a failure: a retry, a node failing, or a workflow routing a
/// classified failure on (not its `retry` back once the backoff is over).
fn is_failure(e: &Value) -> bool {
    match s(&e["kind"]) {
        "retry" | "failed" => true,
        "transition" | "needs_input" => e["class"].is_string() && e["data"]["outcome"] != "retry",
        _ => false,
    }
}

fn failure_text(e: &Value) -> String {
    format!("[{}] {}", s(&e["class"]), s(&e["message"]).trim())
}

/// For each failed node, how it ended and, when that was not the failure itself (a deadline,
/// an exhausted budget), the last failure before it and how often it happened: the cause an
/// operator looks for ("No valid host" four times, then "deadline passed").
pub fn failure_summary(nodes: &[Value], history: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n["status"] == "failed") {
        let name = s(&n["name"]);
        let failures: Vec<&Value> = history
            .iter()
            .filter(|e| e["node"] == name && is_failure(e))
            .collect();
        let end = match failures.last() {
            Some(e) => failure_text(e),
            None => format!("[{}] {}", s(&n["failure_class"]), s(&n["last_error"])),
        };
        let mut line = format!("{name}: {end}");
        if let Some(cause) = failures.iter().rev().find(|e| failure_text(e) != end) {
            let text = failure_text(cause);
            let times = failures.iter().filter(|e| failure_text(e) == text).count();
            let _ = write!(line, "; before that: {text}");
            if times > 1 {
                let _ = write!(line, " ({times} times)");
            }
        }
        out.push(line);
    }
    out
}

pub fn schedules(v: &Value, layout: Layout) -> String {
    let rows: Vec<Vec<String>> = v["schedules"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|sc| {
                    let mut row = vec![
                        s(&sc["id"]).to_string(),
                        s(&sc["name"]).to_string(),
                        s(&sc["cron"]).to_string(),
                        sc["enabled"].to_string(),
                        s(&sc["next_fire_at"]).to_string(),
                        s(&sc["last_job_id"]).to_string(),
                    ];
                    if layout.wide {
                        row.extend([
                            s(&sc["tenant"]).to_string(),
                            s(&sc["owner"]).to_string(),
                            s(&sc["last_error"]).to_string(),
                        ]);
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    let mut header = vec!["ID", "NAME", "CRON", "ENABLED", "NEXT", "LAST JOB"];
    if layout.wide {
        header.extend(["TENANT", "OWNER", "LAST ERROR"]);
    }
    table(&header, &rows, layout.headers)
}

/// `capstan nodes`: a cluster's Machines.
pub fn cluster_nodes(v: &Value, layout: Layout) -> String {
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let ips: Vec<String> = n["floating_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell)
                .collect();
            let mut row = vec![
                s(&n["machine"]).to_string(),
                s(&n["phase"]).to_string(),
                cell(&n["healthy"]["status"]),
                if ips.is_empty() {
                    "-".into()
                } else {
                    ips.join(",")
                },
                s(&n["job"]).to_string(),
            ];
            if layout.wide {
                row.extend([
                    s(&n["node"]).to_string(),
                    s(&n["failure_domain"]).to_string(),
                    s(&n["provider_id"]).to_string(),
                    s(&n["created_at"]).to_string(),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["MACHINE", "PHASE", "HEALTHY", "FLOATING IP", "JOB"];
    if layout.wide {
        header.extend(["NODE", "FAILURE DOMAIN", "PROVIDER ID", "CREATED"]);
    }
    table(&header, &rows, layout.headers)
}

/// `capstan quota`: a project's limits and usage (-1: unlimited).
pub fn quota(v: &Value, layout: Layout) -> String {
    let rows: Vec<Vec<String>> = v["quota"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let (limit, used) = (q["limit"].as_i64(), q["used"].as_i64());
            let free = match (limit, used) {
                (Some(l), _) if l < 0 => "unlimited".to_string(),
                (Some(l), Some(u)) => (l - u).to_string(),
                _ => "-".into(),
            };
            vec![
                s(&q["resource"]).to_string(),
                cell(&q["limit"]),
                cell(&q["used"]),
                free,
            ]
        })
        .collect();
    table(
        &["RESOURCE", "LIMIT", "USED", "FREE"],
        &rows,
        layout.headers,
    )
}

/// A list the CLI has no dedicated table for (`clusters`, `catalog`): the first array of
/// objects in the answer, one column per scalar field of its first item (all fields when
/// wide), so a field the server adds shows without a CLI release.
pub fn generic(v: &Value, layout: Layout) -> String {
    let mut out = String::new();
    let Some(map) = v.as_object() else {
        return format!("{}\n", cell(v));
    };
    for (key, list) in map {
        let Some(items) = list.as_array() else {
            continue;
        };
        let Some(first) = items.first().and_then(Value::as_object) else {
            continue;
        };
        let columns: Vec<&String> = first
            .iter()
            .filter(|(_, x)| layout.wide || !(x.is_object() || x.is_array()))
            .map(|(k, _)| k)
            .collect();
        let header: Vec<String> = columns
            .iter()
            .map(|c| c.to_uppercase().replace('_', " "))
            .collect();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| columns.iter().map(|c| cell(&i[c.as_str()])).collect())
            .collect();
        if map.len() > 1 && layout.headers {
            let _ = writeln!(out, "{key}:");
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header, &rows, layout.headers));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PLAIN: Layout = Layout {
        wide: false,
        headers: true,
    };

    #[test]
    fn a_failed_node_names_the_failure_before_its_deadline_and_how_often() {
        let nodes = [
            json!({"name": "w-1", "status": "failed"}),
            json!({"name": "w-2", "status": "succeeded"}),
        ];
        let no_host = |at| json!({"at": at, "node": "w-1", "kind": "transition", "class": "capacity", "message": "No valid host was found.", "data": {"outcome": "failed"}});
        let history = [
            no_host("1"),
            json!({"node": "w-1", "kind": "transition", "class": "capacity", "message": "retrying after backoff", "data": {"outcome": "retry"}}),
            no_host("2"),
            json!({"node": "w-2", "kind": "retry", "class": "transient", "message": "timed out"}),
            json!({"node": "w-1", "kind": "failed", "class": "timeout", "message": "deadline passed"}),
        ];
        assert_eq!(
            failure_summary(&nodes, &history),
            [
                "w-1: [timeout] deadline passed; before that: [capacity] No valid host was found. (2 times)"
            ]
        );
    }

    #[test]
    fn a_node_that_failed_of_its_own_cause_names_it_once() {
        let nodes = [json!({"name": "w-1", "status": "failed"})];
        let history = [json!({"node": "w-1", "kind": "failed", "class": "auth", "message": "401"})];
        assert_eq!(failure_summary(&nodes, &history), ["w-1: [auth] 401"]);
    }

    #[test]
    fn tables_leave_out_their_header_on_request_and_add_columns_when_wide() {
        let nodes = [
            json!({"name": "w-1", "state": "done", "status": "succeeded", "attempts_total": 22, "external_ids": {"attempts": 1}}),
        ];
        let plain = nodes_table(&nodes, PLAIN);
        assert!(plain.starts_with("NODE"), "{plain}");
        assert!(plain.contains("ATTEMPTS"), "{plain}");
        assert!(!plain.contains("22"), "step runs are not attempts: {plain}");
        let bare = nodes_table(
            &nodes,
            Layout {
                wide: false,
                headers: false,
            },
        );
        assert!(bare.starts_with("w-1"), "{bare}");
        let wide = nodes_table(
            &nodes,
            Layout {
                wide: true,
                headers: true,
            },
        );
        assert!(wide.contains("STEP RUNS") && wide.contains("22"), "{wide}");
    }

    #[test]
    fn an_unknown_list_shows_its_scalar_fields() {
        let v =
            json!({"clusters": [{"namespace": "default", "name": "demo", "labels": {"a": "b"}}]});
        assert_eq!(generic(&v, PLAIN), "NAME  NAMESPACE\ndemo  default\n");
    }
}
