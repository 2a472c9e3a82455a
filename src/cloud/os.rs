//! OpenStack through an `osauth` session (the `openstack` crate's own session): raw JSON
//! calls that keep the HTTP status and the service's own error text, which the failure
//! classifier needs and the crate's typed calls drop.

use osauth::services::{BLOCK_STORAGE, COMPUTE, IMAGE, NETWORK};
use osauth::{ApiVersion, Session};
use reqwest::Method;
use serde_json::Value;

use crate::metrics::{CloudService, cloud_request, code_class};

/// The services Capstan calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Compute,
    Network,
    BlockStorage,
    Image,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Compute => "nova",
            Service::Network => "neutron",
            Service::BlockStorage => "cinder",
            Service::Image => "glance",
        }
    }

    /// The service as `/metrics` names it (its service type).
    fn metered(self) -> CloudService {
        match self {
            Service::Compute => CloudService::Compute,
            Service::Network => CloudService::Network,
            Service::BlockStorage => CloudService::Volume,
            Service::Image => CloudService::Image,
        }
    }
}

/// A refused or failed call: the status (0 when no answer came) and the body the service
/// answered with (never the request, which may carry credentials).
#[derive(Debug, Clone)]
pub struct CallError {
    pub service: Service,
    pub status: u16,
    pub text: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}: {}", self.service.name(), self.text)
        } else {
            write!(f, "{} {}: {}", self.service.name(), self.status, self.text)
        }
    }
}

/// One project's view of a cloud.
#[derive(Clone)]
pub struct OpenStack {
    session: Session,
    pub project_id: String,
}

/// The Nova microversion Capstan speaks (tags on servers, UUID hypervisors).
const NOVA: ApiVersion = ApiVersion(2, 60);

/// How long one call may take, answer included. A service whose database or message queue
/// is stopped does not answer 5xx, it hangs (the lab's real Nova and Cinder with RabbitMQ or
/// MariaDB stopped): without a bound a step, or a submit's preflight, would hang with it.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl OpenStack {
    /// A logged-in session scoped to `project_id` (see `credentials`, which makes them).
    pub fn from_session(session: Session, project_id: String) -> OpenStack {
        OpenStack {
            session,
            project_id,
        }
    }

    pub fn into_session(self) -> Session {
        self.session
    }

    /// The ID of the project the session is scoped to, for credentials that name it by
    /// name: Keystone's `GET /v3/auth/projects` lists the projects the user may scope to.
    pub async fn scoped_project_id(
        &self,
        auth_url: &str,
        name: Option<&str>,
    ) -> Result<String, String> {
        let base = auth_url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let url = reqwest::Url::parse(&format!("{base}/v3/auth/projects"))
            .map_err(|e| format!("auth_url {auth_url}: {e}"))?;
        let started = std::time::Instant::now();
        let sent = self.session.client().request(Method::GET, url).send().await;
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        cloud_request(
            CloudService::Identity,
            code_class(status),
            started.elapsed(),
        );
        let resp = sent.map_err(|e| e.to_string())?;
        let doc: Value = resp.json().await.map_err(|e| e.to_string())?;
        doc["projects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| name.is_none() || p["name"].as_str() == name)
            .and_then(|p| p["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("Keystone lists no project {}", name.unwrap_or("")))
    }

    /// One call; a status outside 2xx (or no answer) is a `CallError` with the raw body.
    /// Every call is timed and counted by service and status class.
    pub async fn call(
        &self,
        service: Service,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let started = std::time::Instant::now();
        let result = self.call_bounded(service, method, path, query, body).await;
        let status = match &result {
            Ok(_) => Some(200),
            Err(e) => (e.status != 0).then_some(e.status),
        };
        cloud_request(service.metered(), code_class(status), started.elapsed());
        result
    }

    async fn call_bounded(
        &self,
        service: Service,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(
            CALL_TIMEOUT,
            self.call_unbounded(service, method, path, query, body),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CallError {
                service,
                status: 0,
                text: format!(
                    "no answer within {} (the service hangs: its database or message queue may be down)",
                    crate::duration::format(CALL_TIMEOUT)
                ),
            }),
        }
    }

    async fn call_unbounded(
        &self,
        service: Service,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let fail = |status: u16, text: String| CallError {
            service,
            status,
            text,
        };
        let sent = match service {
            Service::Compute => {
                let mut r = self
                    .session
                    .request(COMPUTE, method, path)
                    .api_version(NOVA)
                    .query(query);
                if let Some(b) = body {
                    r = r.json(b);
                }
                r.send_unchecked().await
            }
            Service::Network => {
                let mut r = self.session.request(NETWORK, method, path).query(query);
                if let Some(b) = body {
                    r = r.json(b);
                }
                r.send_unchecked().await
            }
            Service::BlockStorage => {
                let mut r = self
                    .session
                    .request(BLOCK_STORAGE, method, path)
                    .query(query);
                if let Some(b) = body {
                    r = r.json(b);
                }
                r.send_unchecked().await
            }
            Service::Image => {
                let mut r = self.session.request(IMAGE, method, path).query(query);
                if let Some(b) = body {
                    r = r.json(b);
                }
                r.send_unchecked().await
            }
        };
        let resp = sent.map_err(|e| fail(0, e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| fail(0, e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(fail(status, text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| fail(status, format!("unreadable answer: {e}")))
    }

    pub async fn get(
        &self,
        service: Service,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, CallError> {
        self.call(service, Method::GET, path, query, None).await
    }

    /// `DELETE`; a 404 counts as done.
    pub async fn delete(&self, service: Service, path: &[&str]) -> Result<(), CallError> {
        match self.call(service, Method::DELETE, path, &[], None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Items of `key` from a list call whose `name` is exactly `name`.
    pub async fn named(
        &self,
        service: Service,
        path: &[&str],
        key: &str,
        name: &str,
    ) -> Result<Vec<Value>, CallError> {
        let v = self.get(service, path, &[("name", name)]).await?;
        Ok(v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["name"] == name)
            .cloned()
            .collect())
    }
}
