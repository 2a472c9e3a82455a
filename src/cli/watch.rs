//! The commands that follow a job as it runs: `jobs watch` (a live per-node display),
//! `jobs wait` (silent) and `jobs events --follow` (the history, live). Each rides the job's
//! server-sent event stream, rides out a server that goes away (reconnecting with
//! `Last-Event-ID`, backing off, giving up after `--reconnect-for` with exit 8), and exits
//! with the job's code (see `exit`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::client::Client;
use super::exit::{self, Failure};
use super::output::{self, Format};
use super::{Patience, WaitFor};

/// Reads an SSE response and sends each event's `data` as JSON; returns when the stream ends
/// or breaks (a server gone away mid-frame loses only that frame, sent again on reconnect).
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

/// How long to keep trying a server that is not there: doubling pauses from 200 ms to 5 s,
/// until it has been gone for the `--reconnect-for` bound.
struct Reconnect {
    bound: Duration,
    down_since: Option<Instant>,
    pause: Duration,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(200);
    const MOST: Duration = Duration::from_secs(5);

    fn new(p: &Patience) -> Reconnect {
        Reconnect {
            bound: p.reconnect_for,
            down_since: None,
            pause: Reconnect::FIRST,
        }
    }

    /// The server answered.
    fn reached(&mut self) {
        self.down_since = None;
        self.pause = Reconnect::FIRST;
    }

    /// The server did not answer with `e`: an error that is not the server's absence, or a
    /// wait past the bound, ends the command; otherwise pauses before the next try.
    async fn lost(&mut self, c: &Client, e: anyhow::Error) -> anyhow::Result<()> {
        if !exit::is_unavailable(&e) {
            return Err(e);
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.bound {
            return Err(Failure::GaveUp {
                url: c.base().to_string(),
                secs: self.bound.as_secs(),
                last: format!("{e:#}"),
            }
            .into());
        }
        eprintln!(
            "capstan: {e:#}; trying again in {} ms",
            self.pause.as_millis()
        );
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Reconnect::MOST);
        Ok(())
    }
}

/// Prints events in a format, each once.
struct Printer {
    format: Format,
    /// The ID of the last event printed; a reconnect starts after it.
    last: i64,
}

impl Printer {
    fn show(&mut self, e: &Value) {
        // Events arrive in ID order; one seen before (sent again after a reconnect) is not
        // printed twice.
        let Some(n) = e["id"].as_i64().filter(|n| *n > self.last) else {
            return;
        };
        self.last = n;
        match self.format {
            Format::Json => println!("{e}"),
            Format::Yaml => print!("---\n{}", serde_yaml::to_string(e).unwrap_or_default()),
            Format::Table | Format::Wide => println!("{}", output::event_line(e)),
        }
        let _ = std::io::stdout().flush();
    }
}

/// Prints each event of the job once, from the first, live and across reconnects; ends once
/// the job has finished and all of its history is printed, with the job's code.
pub async fn follow_events(
    c: &Client,
    id: &str,
    format: Format,
    page_size: u32,
    patience: &Patience,
) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{id}");
    let mut printer = Printer { format, last: 0 };
    let mut reconnect = Reconnect::new(patience);
    loop {
        match c.stream(&format!("{path}/events"), printer.last).await {
            Ok(resp) => {
                reconnect.reached();
                let (tx, mut rx) = mpsc::channel(256);
                tokio::spawn(pump(resp, tx));
                while let Some(e) = rx.recv().await {
                    printer.show(&e);
                }
            }
            Err(e) => {
                reconnect.lost(c, e).await?;
                continue;
            }
        }
        // The stream ended: the job finished, or the server went away (a server shutting
        // down ends its streams too). Its state says which.
        match c.get(&path).await {
            Ok(job) => {
                let state = job["state"].as_str().unwrap_or_default();
                if let Some(end) = exit::finished(id, state) {
                    // Whatever the stream did not carry before it ended.
                    for e in c.events_after(id, printer.last, page_size).await? {
                        printer.show(&e);
                    }
                    return Ok(end?);
                }
                // Still running: a short pause, then back on the stream.
                tokio::time::sleep(Reconnect::FIRST).await;
            }
            Err(e) => reconnect.lost(c, e).await?,
        }
    }
}

/// Wakes a polling loop on the job's next event, or after a second (waits count down without
/// events); keeps the stream open across calls and reopens it after the last event seen.
struct Wakeup {
    path: String,
    rx: Option<mpsc::Receiver<Value>>,
    last_id: i64,
    /// The last event, as a line.
    last: String,
}

impl Wakeup {
    fn new(id: &str) -> Wakeup {
        Wakeup {
            path: format!("/v1/jobs/{id}/events"),
            rx: None,
            last_id: 0,
            last: String::new(),
        }
    }

    fn saw(&mut self, e: &Value) {
        self.last_id = e["id"].as_i64().unwrap_or(self.last_id);
        self.last = output::event_line(e);
    }

    async fn next(&mut self, c: &Client) {
        if self.rx.is_none()
            && let Ok(resp) = c.stream(&self.path, self.last_id).await
        {
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(pump(resp, tx));
            self.rx = Some(rx);
        }
        let Some(rx) = &mut self.rx else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        };
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(e)) => {
                let mut seen = vec![e];
                while let Ok(e) = rx.try_recv() {
                    seen.push(e);
                }
                for e in &seen {
                    self.saw(e);
                }
            }
            // The stream ended (the job finished, or the server went away): the next poll
            // tells which; reopened on the next call.
            Ok(None) => self.rx = None,
            Err(_) => {}
        }
    }
}

pub async fn watch(c: &Client, id: &str, patience: &Patience) -> anyhow::Result<()> {
    let mut wakeup = Wakeup::new(id);
    let mut reconnect = Reconnect::new(patience);
    let tty = std::io::stdout().is_terminal();
    let mut last_frame = String::new();
    loop {
        let (job, why) = match c.job_with_failures(id).await {
            Ok(j) => j,
            Err(e) => {
                reconnect.lost(c, e).await?;
                continue;
            }
        };
        reconnect.reached();
        let nodes = job["nodes"].as_array().cloned().unwrap_or_default();
        let counts = job["node_counts"].as_object().map(|m| {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let state = job["state"].as_str().unwrap_or_default();
        let layout = output::Layout {
            wide: false,
            headers: true,
        };
        let mut frame = format!(
            "job {}  {}  {}  {}   nodes: {}\n\n{}",
            job["id"].as_str().unwrap_or(id),
            job["kind"].as_str().unwrap_or("-"),
            job["cluster"].as_str().unwrap_or("-"),
            state,
            counts.unwrap_or_default(),
            output::nodes_table(&nodes, layout),
        );
        for line in &why {
            frame.push_str(&format!("failed: {line}\n"));
        }
        // Without a terminal (a log, a pipe) a frame is printed when a node or the job
        // changes, not for each countdown or event.
        let key = if tty {
            format!("{frame}\nlast event: {}\n", wakeup.last)
        } else {
            let moves: Vec<String> = nodes
                .iter()
                .map(|n| format!("{} {} {}", n["name"], n["state"], n["status"]))
                .collect();
            format!("{state} {}", moves.join(" "))
        };
        if key != last_frame {
            let mut out = std::io::stdout().lock();
            if tty {
                // Redraw in place: a progress display, not a log.
                let _ = write!(out, "\x1b[H\x1b[2J{key}");
            } else {
                let _ = writeln!(out, "{frame}");
            }
            let _ = out.flush();
            last_frame = key;
        }
        if let Some(end) = exit::job_end(id, state) {
            return Ok(end?);
        }
        wakeup.next(c).await;
    }
}

/// `jobs wait`: polls the job on each of its events (or each second) until it gets where
/// `until` says, then ends with its code; `timeout` bounds the whole wait.
pub async fn wait(
    c: &Client,
    id: &str,
    until: WaitFor,
    timeout: Option<Duration>,
    patience: &Patience,
) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{id}");
    let mut state = String::from("unknown");
    let waiting = async {
        let mut wakeup = Wakeup::new(id);
        let mut reconnect = Reconnect::new(patience);
        loop {
            match c.get(&path).await {
                Ok(job) => {
                    reconnect.reached();
                    state = job["state"].as_str().unwrap_or_default().to_string();
                    let end = match until {
                        WaitFor::Succeeded => exit::job_end(id, &state),
                        WaitFor::Terminal => exit::finished(id, &state),
                    };
                    if let Some(end) = end {
                        return Ok(end?);
                    }
                }
                Err(e) => {
                    reconnect.lost(c, e).await?;
                    continue;
                }
            }
            wakeup.next(c).await;
        }
    };
    let Some(limit) = timeout else {
        return waiting.await;
    };
    match tokio::time::timeout(limit, waiting).await {
        Ok(done) => done,
        Err(_) => Err(Failure::TimedOut {
            id: id.to_string(),
            secs: limit.as_secs(),
            state,
        }
        .into()),
    }
}
