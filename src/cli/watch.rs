//! `capstan jobs watch` (a live per-node progress display) and `jobs events --follow`.
//! Both ride the job's server-sent event stream; `watch` redraws the node table on each event
//! and exits with the job's code (see `exit`) once it has finished or needs input.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::client::Client;
use super::exit;
use super::output;

/// Reads an SSE response and sends each event's `data` as JSON.
async fn pump(resp: reqwest::Response, tx: mpsc::Sender<Value>) {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.trim_start())
                .collect::<Vec<_>>()
                .join("\n");
            if let Ok(v) = serde_json::from_str::<Value>(&data)
                && tx.send(v).await.is_err()
            {
                return;
            }
        }
    }
}

pub async fn follow_events(c: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let resp = c.stream(&format!("/v1/jobs/{id}/events")).await?;
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(pump(resp, tx));
    while let Some(e) = rx.recv().await {
        if json {
            println!("{e}");
        } else {
            println!("{}", output::event_line(&e));
        }
    }
    Ok(())
}

pub async fn watch(c: &Client, id: &str) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{id}");
    let resp = c.stream(&format!("{path}/events")).await?;
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(pump(resp, tx));
    let tty = std::io::stdout().is_terminal();
    let mut last_frame = String::new();
    let mut last_event = String::new();
    loop {
        let job = c.get(&path).await?;
        let nodes = job["nodes"].as_array().cloned().unwrap_or_default();
        let counts = job["node_counts"].as_object().map(|m| {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let frame = format!(
            "job {}  {}  {}  {}   nodes: {}\n\n{}\nlast event: {}\n",
            job["id"].as_str().unwrap_or(id),
            job["kind"].as_str().unwrap_or("-"),
            job["cluster"].as_str().unwrap_or("-"),
            job["state"].as_str().unwrap_or("-"),
            counts.unwrap_or_default(),
            output::nodes_table(&nodes),
            last_event,
        );
        if frame != last_frame {
            let mut out = std::io::stdout().lock();
            if tty {
                // Redraw in place: a progress display, not a log.
                let _ = write!(out, "\x1b[H\x1b[2J");
            }
            let _ = write!(out, "{frame}");
            let _ = out.flush();
            last_frame = frame;
        }
        if let Some(end) = exit::job_end(id, job["state"].as_str().unwrap_or_default()) {
            return Ok(end?);
        }
        // Redraw on the next event, or after a second (waits count down without events).
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            last_event = output::event_line(&e);
            while let Ok(e) = rx.try_recv() {
                last_event = output::event_line(&e);
            }
        }
    }
}
