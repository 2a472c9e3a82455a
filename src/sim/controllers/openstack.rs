//! The simulated CAPO's OpenStack client: it talks to the simulated cloud over HTTP as
//! gophercloud does, so injected outages hit it too, and it words failures as gophercloud
//! does (`Expected HTTP response code [202] when accessing [POST …], but got 403 instead: …`).

use std::collections::HashMap;

use serde_json::{Value, json};

/// Credentials from a cluster's `clouds.yaml` Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project: String,
}

/// A session: token plus the catalog's endpoints by service type.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    token: String,
    endpoints: HashMap<String, String>,
    /// The project the token is scoped to (CAPO looks security groups up within it).
    pub project_id: String,
}

/// A failed call, in gophercloud's words.
#[derive(Debug, Clone)]
pub struct CallError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Session {
    pub async fn login(http: &reqwest::Client, c: &Credentials) -> Result<Session, CallError> {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": "Default"}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": "Default"}}},
        }});
        let url = format!("{}/auth/tokens", c.auth_url.trim_end_matches('/'));
        let resp = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| CallError {
                status: 0,
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let Some(token) = token.filter(|_| status == 201) else {
            return Err(unexpected("POST", &url, &[201], status, &text));
        };
        let doc: Value = serde_json::from_str(&text).unwrap_or_default();
        let mut endpoints = HashMap::new();
        for svc in doc["token"]["catalog"].as_array().into_iter().flatten() {
            let url = svc["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["interface"] == "public")
                .and_then(|e| e["url"].as_str());
            if let (Some(t), Some(u)) = (svc["type"].as_str(), url) {
                endpoints.insert(t.to_string(), u.trim_end_matches('/').to_string());
            }
        }
        Ok(Session {
            http: http.clone(),
            token,
            endpoints,
            project_id: doc["token"]["project"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn url(&self, service: &str, path: &str) -> String {
        let base = self.endpoints.get(service).cloned().unwrap_or_default();
        let base = match service {
            "network" => format!("{base}/v2.0"),
            "image" => format!("{base}/v2"),
            _ => base,
        };
        format!("{base}{path}")
    }

    /// One call; any status outside `expected` is an error worded like gophercloud's.
    pub async fn call(
        &self,
        method: reqwest::Method,
        service: &str,
        path: &str,
        body: Option<&Value>,
        expected: &[u16],
    ) -> Result<Value, CallError> {
        let url = self.url(service, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Auth-Token", &self.token);
        if service == "compute" {
            req = req.header("X-OpenStack-Nova-API-Version", "2.90");
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| CallError {
            status: 0,
            message: format!("{method} {url}: {e}"),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if !expected.contains(&status) {
            return Err(unexpected(method.as_str(), &url, expected, status, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, service: &str, path: &str) -> Result<Value, CallError> {
        self.call(reqwest::Method::GET, service, path, None, &[200])
            .await
    }

    /// The one item of `key` in a list filtered by exact `name`, if any.
    pub async fn find_by_name(
        &self,
        service: &str,
        path: &str,
        key: &str,
        name: &str,
    ) -> Result<Option<Value>, CallError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let doc = self
            .get(service, &format!("{path}{sep}name={}", encode(name)))
            .await?;
        Ok(doc[key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == name)
            .cloned())
    }
}

fn unexpected(method: &str, url: &str, expected: &[u16], got: u16, body: &str) -> CallError {
    let expected: Vec<String> = expected.iter().map(u16::to_string).collect();
    CallError {
        status: got,
        message: format!(
            "Expected HTTP response code [{}] when accessing [{method} {url}], but got {got} instead: {}",
            expected.join(" "),
            body.trim()
        ),
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Reads a `clouds.yaml` (CAPO's identityRef Secret) for one cloud name.
pub fn credentials(clouds_yaml: &str, cloud: &str) -> Option<Credentials> {
    let doc: Value = serde_yaml::from_str(clouds_yaml).ok()?;
    let auth = &doc["clouds"][cloud]["auth"];
    Some(Credentials {
        auth_url: auth["auth_url"].as_str()?.to_string(),
        username: auth["username"].as_str()?.to_string(),
        password: auth["password"].as_str()?.to_string(),
        project: auth["project_name"].as_str()?.to_string(),
    })
}
