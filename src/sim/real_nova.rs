//! A real Nova as the kubelets' source of booted servers (`capstan sim --external-kube K
//! --follow-nova CLOUDS_YAML`): with the upstream lab's real OpenStack, nothing of the
//! simulated cloud is used except its kubelets. They learn which servers are ACTIVE from
//! Nova itself, over HTTP, as any client: a Keystone password login from a `clouds.yaml`
//! entry (an admin's, so that `all_tenants` lists every project's servers), then
//! `GET /servers/detail?all_tenants=1`.
//!
//! Invariant: this reads the real cloud and never writes to it; a failed read changes
//! nothing (the caller keeps every Node it registered).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::external::Booted;

/// Nova's microversion asked for: 2.47 and later embed the flavor (`flavor.original_name`).
const NOVA_VERSION: &str = "compute 2.60";

/// Every call is bounded: a Nova that hangs (RabbitMQ or MariaDB gone) must not hang the
/// kubelets, which then keep the Nodes they have.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Keystone tokens last an hour by default; log in again well before.
const TOKEN_LIFE: Duration = Duration::from_secs(30 * 60);

/// The password credentials of one `clouds.yaml` entry.
struct Credentials {
    auth_url: String,
    username: String,
    password: String,
    project_name: Option<String>,
    project_id: Option<String>,
    user_domain: String,
    project_domain: String,
    interface: String,
}

/// A logged-in view of one real Nova, and when each server was first seen ACTIVE (the
/// kubelet's boot clock starts there).
pub struct RealNova {
    http: reqwest::Client,
    creds: Credentials,
    session: Option<(String, String, Instant)>,
    active_since: HashMap<String, Instant>,
}

impl RealNova {
    /// Reads entry `cloud` of `clouds.yaml` (password auth).
    pub fn from_clouds_yaml(path: &Path, cloud: &str) -> anyhow::Result<RealNova> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        let entry = &doc["clouds"][cloud];
        let auth = &entry["auth"];
        let s = |v: &serde_yaml::Value| v.as_str().map(str::to_string);
        let need = |field: &str| {
            s(&auth[field]).with_context(|| {
                format!("{}: clouds.{cloud}.auth.{field} is missing", path.display())
            })
        };
        let creds = Credentials {
            auth_url: need("auth_url")?,
            username: need("username")?,
            password: need("password")?,
            project_name: s(&auth["project_name"]),
            project_id: s(&auth["project_id"]),
            user_domain: s(&auth["user_domain_name"]).unwrap_or_else(|| "Default".into()),
            project_domain: s(&auth["project_domain_name"]).unwrap_or_else(|| "Default".into()),
            interface: s(&entry["interface"]).unwrap_or_else(|| "public".into()),
        };
        if creds.project_name.is_none() && creds.project_id.is_none() {
            anyhow::bail!(
                "{}: clouds.{cloud}.auth names no project (project_name or project_id)",
                path.display()
            );
        }
        Ok(RealNova {
            http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
            creds,
            session: None,
            active_since: HashMap::new(),
        })
    }

    /// A token and Nova's endpoint from Keystone's catalog, reused until it ages.
    async fn session(&mut self) -> anyhow::Result<(String, String)> {
        if let Some((token, compute, at)) = &self.session
            && at.elapsed() < TOKEN_LIFE
        {
            return Ok((token.clone(), compute.clone()));
        }
        let c = &self.creds;
        let project = match &c.project_id {
            Some(id) => json!({"id": id}),
            None => json!({"name": c.project_name, "domain": {"name": c.project_domain}}),
        };
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain}, "password": c.password}}},
            "scope": {"project": project}}});
        let base = c.auth_url.trim_end_matches('/');
        let url = match base.ends_with("/v3") {
            true => format!("{base}/auth/tokens"),
            false => format!("{base}/v3/auth/tokens"),
        };
        let resp = self.http.post(&url).json(&body).send().await?;
        let status = resp.status();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let doc: Value = resp.json().await.unwrap_or(Value::Null);
        let Some(token) = token.filter(|_| status.is_success()) else {
            // Keystone's error text names no secret.
            anyhow::bail!(
                "Keystone login at {url}: {status} {}",
                doc["error"]["message"]
            );
        };
        let compute = doc["token"]["catalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == "compute")
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["interface"] == c.interface.as_str())
            .and_then(|e| {
                e["url"]
                    .as_str()
                    .map(|u| u.trim_end_matches('/').to_string())
            })
            .context("Keystone's catalog has no compute endpoint")?;
        self.session = Some((token.clone(), compute.clone(), Instant::now()));
        Ok((token, compute))
    }

    /// Every project's ACTIVE servers, each with the moment it was first seen so.
    pub async fn booted(&mut self) -> anyhow::Result<Vec<Booted>> {
        let (token, compute) = self.session().await?;
        let resp = self
            .http
            .get(format!("{compute}/servers/detail"))
            .query(&[("all_tenants", "1")])
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", NOVA_VERSION)
            .send()
            .await?;
        let status = resp.status();
        if status.as_u16() == 401 {
            self.session = None;
        }
        if !status.is_success() {
            anyhow::bail!("Nova GET /servers/detail: {status} {}", resp.text().await?);
        }
        let doc: Value = resp.json().await?;
        let now = Instant::now();
        let mut out = Vec::new();
        for s in doc["servers"].as_array().into_iter().flatten() {
            if s["status"] != "ACTIVE" {
                continue;
            }
            let (Some(id), Some(name)) = (s["id"].as_str(), s["name"].as_str()) else {
                continue;
            };
            let since = *self.active_since.entry(id.to_string()).or_insert(now);
            out.push(Booted {
                name: name.to_string(),
                id: id.to_string(),
                zone: s["OS-EXT-AZ:availability_zone"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                flavor: s["flavor"]["original_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                address: fixed_address(&s["addresses"]),
                ready_at: since,
            });
        }
        self.active_since
            .retain(|id, _| out.iter().any(|b| b.id == *id));
        Ok(out)
    }
}

/// The server's first fixed (not floating) address, as kubelet would report its InternalIP.
fn fixed_address(addresses: &Value) -> Option<String> {
    addresses
        .as_object()?
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .find(|a| a["OS-EXT-IPS:type"] != "floating")
        .and_then(|a| a["addr"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_address_is_the_fixed_one_not_the_floating_one() {
        let addresses = json!({"demo-net": [
            {"addr": "172.35.0.9", "OS-EXT-IPS:type": "floating"},
            {"addr": "10.6.0.21", "OS-EXT-IPS:type": "fixed"},
        ]});
        assert_eq!(fixed_address(&addresses).as_deref(), Some("10.6.0.21"));
        assert_eq!(fixed_address(&json!({})), None);
    }

    #[test]
    fn a_clouds_yaml_entry_without_a_project_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(
            &path,
            "clouds:\n  lab:\n    auth: {auth_url: 'http://x/v3', username: u, password: p}\n",
        )
        .unwrap();
        let err = RealNova::from_clouds_yaml(&path, "lab")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("clouds.lab.auth names no project"), "{err}");
        let err = RealNova::from_clouds_yaml(&path, "other")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("clouds.other.auth.auth_url is missing"),
            "{err}"
        );
    }
}
