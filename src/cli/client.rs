//! The API client behind `capstan jobs` and `capstan schedules`.

use std::path::Path;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::exit::Failure;
use super::{JobsCmd, Remote, SchedulesCmd, output, watch};
use crate::config::Secret;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let Some(token) = remote.token.clone() else {
            bail!("no token: pass --token or set CAPSTAN_TOKEN");
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: remote.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            return Err(Failure::Answered {
                status,
                message: msg,
            }
            .into());
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// Opens the job's live event stream.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header("accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        if !resp.status().is_success() {
            return Err(Failure::Answered {
                status: resp.status(),
                message: resp.text().await.unwrap_or_default(),
            }
            .into());
        }
        Ok(resp)
    }
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

fn print(remote: &Remote, v: &Value, human: impl FnOnce(&Value) -> String) {
    if remote.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

pub async fn jobs(cmd: JobsCmd) -> anyhow::Result<()> {
    match cmd {
        JobsCmd::Submit {
            file,
            idempotency_key,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let body = read_json(&file)?;
            let headers: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            let job = c
                .call(Method::POST, "/v1/jobs", Some(&body), &headers)
                .await?;
            print(&remote, &job, output::job);
        }
        JobsCmd::List {
            kind,
            state,
            cluster,
            tenant,
            limit,
            cursor,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("kind", kind),
                ("state", state),
                ("cluster", cluster),
                ("tenant", tenant),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let page = c.get(&format!("/v1/jobs?{}", q.join("&"))).await?;
            print(&remote, &page, output::job_list);
        }
        JobsCmd::Show { id, remote } => {
            let c = Client::new(&remote)?;
            print(
                &remote,
                &c.get(&format!("/v1/jobs/{id}")).await?,
                output::job,
            );
        }
        JobsCmd::Events { id, follow, remote } => {
            let c = Client::new(&remote)?;
            if follow {
                watch::follow_events(&c, &id, remote.json).await?;
            } else {
                let page = c.get(&format!("/v1/jobs/{id}/events")).await?;
                print(&remote, &page, output::events);
            }
        }
        JobsCmd::Watch { id, remote } => {
            let c = Client::new(&remote)?;
            watch::watch(&c, &id).await?;
        }
        JobsCmd::Cancel { id, remote } => {
            let c = Client::new(&remote)?;
            let job = c
                .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None, &[])
                .await?;
            print(&remote, &job, output::job);
        }
        JobsCmd::Resume { id, remote } => {
            let c = Client::new(&remote)?;
            let job = c
                .call(Method::POST, &format!("/v1/jobs/{id}/resume"), None, &[])
                .await?;
            print(&remote, &job, output::job);
        }
        JobsCmd::Amend {
            id,
            node,
            patch,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let patch: Value = serde_json::from_str(&patch).context("the patch is not JSON")?;
            let n = c
                .call(
                    Method::PATCH,
                    &format!("/v1/jobs/{id}/nodes/{node}"),
                    Some(&patch),
                    &[],
                )
                .await?;
            print(&remote, &n, |n| {
                format!("{}\n", serde_json::to_string_pretty(n).unwrap_or_default())
            });
        }
    }
    Ok(())
}

pub async fn schedules(cmd: SchedulesCmd) -> anyhow::Result<()> {
    match cmd {
        SchedulesCmd::List { remote } => {
            let c = Client::new(&remote)?;
            print(&remote, &c.get("/v1/schedules").await?, output::schedules);
        }
        SchedulesCmd::Create {
            name,
            cron,
            job_file,
            disabled,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let body = json!({ "name": name, "cron": cron, "job": read_json(&job_file)?, "enabled": !disabled });
            let s = c
                .call(Method::POST, "/v1/schedules", Some(&body), &[])
                .await?;
            print(&remote, &json!({ "schedules": [s] }), output::schedules);
        }
        SchedulesCmd::Show { id, remote } => {
            let c = Client::new(&remote)?;
            let s = c.get(&format!("/v1/schedules/{id}")).await?;
            print(&remote, &json!({ "schedules": [s] }), output::schedules);
        }
        SchedulesCmd::Update {
            id,
            cron,
            job_file,
            enabled,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let mut body = serde_json::Map::new();
            if let Some(cron) = cron {
                body.insert("cron".into(), json!(cron));
            }
            if let Some(f) = job_file {
                body.insert("job".into(), read_json(&f)?);
            }
            if let Some(e) = enabled {
                body.insert("enabled".into(), json!(e));
            }
            let s = c
                .call(
                    Method::PATCH,
                    &format!("/v1/schedules/{id}"),
                    Some(&Value::Object(body)),
                    &[],
                )
                .await?;
            print(&remote, &json!({ "schedules": [s] }), output::schedules);
        }
        SchedulesCmd::Delete { id, remote } => {
            let c = Client::new(&remote)?;
            c.call(Method::DELETE, &format!("/v1/schedules/{id}"), None, &[])
                .await?;
            println!("deleted schedule {id}");
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
