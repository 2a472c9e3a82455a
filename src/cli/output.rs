//! Human-readable renderings of the API's JSON for the CLI.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Left-aligned columns, widths from the content.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

pub fn job(j: &Value) -> String {
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
        out.push_str(&nodes_table(nodes));
    }
    out
}

pub fn nodes_table(nodes: &[Value]) -> String {
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
            vec![
                s(&n["name"]).to_string(),
                s(&n["state"]).to_string(),
                s(&n["status"]).to_string(),
                n["attempts_total"].to_string(),
                detail,
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "STATE",
            "STATUS",
            "RUNS",
            "WAITING FOR / LAST ERROR",
        ],
        &rows,
    )
}

pub fn job_list(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    vec![
                        s(&j["id"]).to_string(),
                        s(&j["kind"]).to_string(),
                        s(&j["cluster"]).to_string(),
                        s(&j["state"]).to_string(),
                        s(&j["tenant"]).to_string(),
                        s(&j["created_at"]).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(
        &["ID", "KIND", "CLUSTER", "STATE", "TENANT", "CREATED"],
        &rows,
    );
    if let Some(c) = page["next_cursor"].as_str() {
        let _ = writeln!(out, "(more: --cursor {c})");
    }
    out
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
    if let Some(a) = e["attempt"].as_i64() {
        let _ = write!(out, " attempt {a}");
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

pub fn events(page: &Value) -> String {
    let mut out = String::new();
    for e in page["events"].as_array().into_iter().flatten() {
        out.push_str(&event_line(e));
        out.push('\n');
    }
    out
}

pub fn schedules(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["schedules"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|sc| {
                    vec![
                        s(&sc["id"]).to_string(),
                        s(&sc["name"]).to_string(),
                        s(&sc["cron"]).to_string(),
                        sc["enabled"].to_string(),
                        s(&sc["next_fire_at"]).to_string(),
                        s(&sc["last_job_id"]).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &["ID", "NAME", "CRON", "ENABLED", "NEXT", "LAST JOB"],
        &rows,
    )
}
