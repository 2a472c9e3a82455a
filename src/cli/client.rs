//! The API client behind `capstan jobs`, `schedules` and the cluster views (`nodes`,
//! `quota`, `clusters`, `catalog`): pages followed to the end, job IDs resolved from a
//! unique prefix, answers printed in the format asked for.

use std::path::Path;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::exit::Failure;
use super::output::Layout;
use super::{ClusterArgs, JobsCmd, Remote, SchedulesCmd, output, watch};
use crate::config::Secret;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl Client {
    /// The server's base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let Some(token) = remote.token.clone() else {
            bail!("no token: pass --token or set CAPSTAN_TOKEN");
        };
        let mut http = reqwest::Client::builder();
        if let Some(path) = &remote.cacert {
            let shown = path.display();
            let pem = std::fs::read(path).with_context(|| format!("--cacert {shown}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--cacert {shown}: not PEM certificates"))?;
            if certs.is_empty() {
                bail!("--cacert {shown}: no certificate in the file");
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Client {
            http: http.build()?,
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

    /// Opens the job's live event stream after event `after` (`Last-Event-ID`).
    pub async fn stream(&self, path: &str, after: i64) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header("accept", "text/event-stream");
        if after > 0 {
            req = req.header("last-event-id", after.to_string());
        }
        let resp = req
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

/// A job (or template) file: YAML by its extension or unless it opens with `{`, JSON otherwise;
/// `-` reads standard input.
fn read_job_file(file: &Path) -> anyhow::Result<Value> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let yaml_name = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
    if !yaml_name && text.trim_start().starts_with('{') {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
    } else {
        serde_yaml::from_str(&text)
            .with_context(|| format!("{} is neither YAML nor JSON", file.display()))
    }
}

fn print(remote: &Remote, v: &Value, human: impl FnOnce(&Value, Layout) -> String) {
    output::print(remote.format(), !remote.no_headers, v, human);
}

impl Client {
    /// A job ID as typed: in full, or a prefix naming exactly one job the caller may see
    /// (found by listing them: the server knows only full IDs).
    pub async fn resolve_job(&self, typed: &str) -> anyhow::Result<String> {
        if uuid::Uuid::parse_str(typed).is_ok() {
            return Ok(typed.to_string());
        }
        let prefix = typed.to_ascii_lowercase();
        let (jobs, _) = self.jobs(&[], None, None, 500).await?;
        let candidates: Vec<String> = jobs
            .iter()
            .filter_map(|j| j["id"].as_str())
            .filter(|id| id.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        match candidates.as_slice() {
            [] => Err(Failure::NoSuchJob(typed.to_string()).into()),
            [one] => Ok(one.clone()),
            _ => Err(Failure::AmbiguousPrefix {
                prefix: typed.to_string(),
                candidates,
            }
            .into()),
        }
    }

    /// Jobs matching `filters`, newest first, page after page from `cursor` until `limit`
    /// (or every one); with the cursor to go on from when jobs are left.
    async fn jobs(
        &self,
        filters: &[(&str, String)],
        cursor: Option<String>,
        limit: Option<usize>,
        page_size: u32,
    ) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        let mut jobs = Vec::new();
        let mut cursor = cursor;
        loop {
            let want = limit.map_or(page_size as usize, |l| {
                (l - jobs.len()).min(page_size as usize)
            });
            let mut q = vec![format!("limit={want}")];
            for (k, v) in filters
                .iter()
                .map(|(k, v)| (*k, v))
                .chain(cursor.iter().map(|c| ("cursor", c)))
            {
                q.push(format!("{k}={}", urlencode(v)));
            }
            let page = self.get(&format!("/v1/jobs?{}", q.join("&"))).await?;
            jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() || limit.is_some_and(|l| jobs.len() >= l) {
                return Ok((jobs, cursor));
            }
        }
    }

    /// A job's history after event `after`, every page of it.
    pub async fn events_after(
        &self,
        id: &str,
        after: i64,
        page_size: u32,
    ) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut after = after;
        loop {
            let page = self
                .get(&format!(
                    "/v1/jobs/{id}/events?after={after}&limit={page_size}"
                ))
                .await?;
            let batch = page["events"].as_array().cloned().unwrap_or_default();
            // The server answers pages until one comes back empty.
            let Some(last) = batch.last().and_then(|e| e["id"].as_i64()) else {
                return Ok(events);
            };
            after = last;
            events.extend(batch);
        }
    }

    /// A job and, once some node has failed, the lines that say why (from its history).
    pub async fn job_with_failures(&self, id: &str) -> anyhow::Result<(Value, Vec<String>)> {
        let job = self.get(&format!("/v1/jobs/{id}")).await?;
        let nodes = job["nodes"].as_array().cloned().unwrap_or_default();
        if !nodes.iter().any(|n| n["status"] == "failed") {
            return Ok((job, Vec::new()));
        }
        let history = self.events_after(id, 0, 1000).await?;
        let why = output::failure_summary(&nodes, &history);
        Ok((job, why))
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
            let body = read_job_file(file.path())?;
            let headers: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            let job = c
                .call(Method::POST, "/v1/jobs", Some(&body), &headers)
                .await?;
            print(&remote, &job, |j, l| output::job(j, l, &[]));
        }
        JobsCmd::List {
            kind,
            state,
            cluster,
            tenant,
            limit,
            all,
            cursor,
            page_size,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let filters: Vec<(&str, String)> = [
                ("kind", kind),
                ("state", state),
                ("cluster", cluster),
                ("tenant", tenant),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let limit = (!all).then_some(limit as usize);
            let (jobs, next) = c.jobs(&filters, cursor, limit, page_size).await?;
            let page = json!({ "jobs": jobs, "next_cursor": next });
            print(&remote, &page, output::job_list);
            if let Some(next) = next {
                // On stderr: a script reading the rows never takes it for one.
                eprintln!("(more: --cursor {next}, or --all)");
            }
        }
        JobsCmd::Show { id, remote } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            let (job, why) = c.job_with_failures(&id).await?;
            print(&remote, &job, |j, l| output::job(j, l, &why));
        }
        JobsCmd::Events {
            id,
            follow,
            page_size,
            patience,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            if follow {
                watch::follow_events(&c, &id, remote.format(), page_size, &patience).await?;
            } else {
                let events = c.events_after(&id, 0, page_size).await?;
                let next_after = events.last().map_or(json!(0), |e| e["id"].clone());
                let page = json!({ "events": events, "next_after": next_after });
                print(&remote, &page, output::events);
            }
        }
        JobsCmd::Watch {
            id,
            patience,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            watch::watch(&c, &id, &patience).await?;
        }
        JobsCmd::Wait {
            id,
            until,
            timeout,
            patience,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            watch::wait(&c, &id, until, timeout, &patience).await?;
        }
        JobsCmd::Cancel { id, remote } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            let job = c
                .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None, &[])
                .await?;
            print(&remote, &job, |j, l| output::job(j, l, &[]));
        }
        JobsCmd::Resume { id, remote } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            let job = c
                .call(Method::POST, &format!("/v1/jobs/{id}/resume"), None, &[])
                .await?;
            print(&remote, &job, |j, l| output::job(j, l, &[]));
        }
        JobsCmd::Amend {
            id,
            node,
            patch,
            remote,
        } => {
            let c = Client::new(&remote)?;
            let id = c.resolve_job(&id).await?;
            let patch: Value = serde_json::from_str(&patch).context("the patch is not JSON")?;
            let n = c
                .call(
                    Method::PATCH,
                    &format!("/v1/jobs/{id}/nodes/{}", urlencode(&node)),
                    Some(&patch),
                    &[],
                )
                .await?;
            print(&remote, &n, |n, l| {
                output::nodes_table(std::slice::from_ref(n), l)
            });
        }
    }
    Ok(())
}

/// What `capstan nodes|quota|catalog NS/NAME` shows of a cluster.
#[derive(Debug, Clone, Copy)]
pub enum ClusterView {
    Nodes,
    Quota,
    Catalog,
}

pub async fn cluster_view(a: ClusterArgs, view: ClusterView) -> anyhow::Result<()> {
    let Some((ns, name)) = a
        .cluster
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Err(Failure::Usage(format!(
            "`{}` is not a cluster: write NAMESPACE/NAME (e.g. default/demo)",
            a.cluster
        ))
        .into());
    };
    let c = Client::new(&a.remote)?;
    let what = match view {
        ClusterView::Nodes => "nodes",
        ClusterView::Quota => "quota",
        ClusterView::Catalog => "catalog",
    };
    let v = c
        .get(&format!(
            "/v1/clusters/{}/{}/{what}",
            urlencode(ns),
            urlencode(name)
        ))
        .await?;
    let human = match view {
        ClusterView::Nodes => output::cluster_nodes,
        ClusterView::Quota => output::quota,
        ClusterView::Catalog => output::generic,
    };
    print(&a.remote, &v, human);
    Ok(())
}

pub async fn clusters(remote: Remote) -> anyhow::Result<()> {
    let c = Client::new(&remote)?;
    print(&remote, &c.get("/v1/clusters").await?, output::generic);
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
            let body = json!({ "name": name, "cron": cron, "job": read_job_file(&job_file)?, "enabled": !disabled });
            let s = c
                .call(Method::POST, "/v1/schedules", Some(&body), &[])
                .await?;
            print(&remote, &s, |s, l| {
                output::schedules(&json!({ "schedules": [s] }), l)
            });
        }
        SchedulesCmd::Show { id, remote } => {
            let c = Client::new(&remote)?;
            let s = c.get(&format!("/v1/schedules/{id}")).await?;
            print(&remote, &s, |s, l| {
                output::schedules(&json!({ "schedules": [s] }), l)
            });
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
                body.insert("job".into(), read_job_file(&f)?);
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
            print(&remote, &s, |s, l| {
                output::schedules(&json!({ "schedules": [s] }), l)
            });
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
