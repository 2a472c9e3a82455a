//! Each cluster's own OpenStack credentials: the Secret its OpenStackCluster names in
//! `spec.identityRef` — CAPO's `clouds.yaml` (key `clouds.yaml`, optional `cacert`) and the
//! entry `cloudName` — the same credentials CAPO itself uses for the cluster.
//!
//! Invariant: every OpenStack call for a cluster is made with a session built here for that
//! cluster, so a tenant's job can see and touch only its own project (seed §5). The server's
//! own `clouds.yaml` is used only for clusters without an identityRef, and only when the
//! operator asked for that fallback. Sessions are cached per Secret and `resourceVersion`,
//! and a cluster's objects are read again at most every 10 s: a rotated Secret gets a new
//! login within that.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use serde_yaml::Value as Yaml;

use super::ClusterRef;
use super::capi;
use super::os::OpenStack;

/// The server-wide `clouds.yaml` entry used for clusters that name no identityRef.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub clouds_yaml: PathBuf,
    pub cloud: String,
}

/// Why a cluster's credentials could not be had. `Display` names the Secret and the field;
/// it never prints a secret value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The management cluster could not be read (retry later).
    #[error("could not read {what}: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("no CAPI Cluster {0}")]
    NoCluster(ClusterRef),
    #[error("no OpenStackCluster {ns}/{name} (the infrastructureRef of Cluster {cluster})")]
    NoOpenStackCluster {
        cluster: ClusterRef,
        ns: String,
        name: String,
    },
    #[error(
        "OpenStackCluster {ns}/{name} names no spec.identityRef, and this server has no fallback clouds.yaml (--clouds-yaml)"
    )]
    NoIdentity { ns: String, name: String },
    #[error("Secret {ns}/{name} (identityRef of cluster {cluster}) does not exist")]
    SecretMissing {
        cluster: ClusterRef,
        ns: String,
        name: String,
    },
    #[error("Secret {ns}/{name}: {field}: {reason}")]
    BadSecret {
        ns: String,
        name: String,
        field: String,
        reason: String,
    },
    #[error("Secret {ns}/{name}: logging in as cloud `{cloud}` was refused: {reason}")]
    LoginRefused {
        ns: String,
        name: String,
        cloud: String,
        reason: String,
    },
    /// OpenStack could not be reached to log in (retry later).
    #[error("Secret {ns}/{name}: OpenStack could not be reached to log in as `{cloud}`: {reason}")]
    LoginUnavailable {
        ns: String,
        name: String,
        cloud: String,
        reason: String,
    },
}

impl CredentialError {
    /// True when asking again later may succeed (the cloud or the apiserver was down);
    /// false when the credentials themselves are wrong or missing.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CredentialError::Unreachable { .. } | CredentialError::LoginUnavailable { .. }
        )
    }
}

/// Where a session came from, to decide whether a cached one is still good.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SecretKey {
    ns: String,
    name: String,
    cloud: String,
}

/// Finds and logs in with each cluster's credentials.
pub struct Clouds {
    kube: kube::Client,
    /// Shared with `Clients`: the CAPI version is discovered once per kube client.
    capi_version: Arc<tokio::sync::OnceCell<capi::CapiVersion>>,
    fallback: Option<Fallback>,
    fallback_session: tokio::sync::OnceCell<OpenStack>,
    sessions: Mutex<HashMap<SecretKey, (String, OpenStack)>>,
    /// The last answer per cluster, reused for `RECHECK` before the objects are read again.
    recent: Mutex<HashMap<ClusterRef, (std::time::Instant, OpenStack)>>,
}

/// How long a cluster's resolved session is used before its Cluster, OpenStackCluster and
/// Secret are read again (a rotated Secret is picked up within this).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

impl Clouds {
    pub fn new(
        kube: kube::Client,
        capi_version: Arc<tokio::sync::OnceCell<capi::CapiVersion>>,
        fallback: Option<Fallback>,
    ) -> Clouds {
        Clouds {
            kube,
            capi_version,
            fallback,
            fallback_session: tokio::sync::OnceCell::new(),
            sessions: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    /// The session for `cluster`'s project, made with the cluster's own credentials.
    pub async fn for_cluster(&self, cluster: &ClusterRef) -> Result<OpenStack, CredentialError> {
        if let Some((at, os)) = self.recent.lock().unwrap().get(cluster)
            && at.elapsed() < RECHECK
        {
            return Ok(os.clone());
        }
        let os = self.resolve(cluster).await?;
        self.recent
            .lock()
            .unwrap()
            .insert(cluster.clone(), (std::time::Instant::now(), os.clone()));
        Ok(os)
    }

    /// Reads the cluster's objects and its Secret, and logs in unless the Secret's version
    /// has a session already.
    async fn resolve(&self, cluster: &ClusterRef) -> Result<OpenStack, CredentialError> {
        let unreachable = |what: String, e: kube::Error| CredentialError::Unreachable {
            what,
            reason: e.to_string(),
        };
        let ns = cluster.ns.as_str();
        let capi = super::capi_of(&self.kube, &self.capi_version)
            .await
            .map_err(|e| unreachable("the Cluster API version served".into(), e))?;
        let found = capi
            .clusters(ns)
            .get_opt(&cluster.name)
            .await
            .map_err(|e| unreachable(format!("Cluster {cluster}"), e))?
            .ok_or_else(|| CredentialError::NoCluster(cluster.clone()))?;
        let infra =
            capi::shape::infrastructure_name(&found).unwrap_or_else(|| cluster.name.clone());
        let osc = capi
            .openstack_clusters(ns)
            .get_opt(&infra)
            .await
            .map_err(|e| unreachable(format!("OpenStackCluster {ns}/{infra}"), e))?
            .ok_or_else(|| CredentialError::NoOpenStackCluster {
                cluster: cluster.clone(),
                ns: ns.to_string(),
                name: infra.clone(),
            })?;
        let osc = capi::capo::OpenStackCluster::read(&osc);
        let Some(secret_name) = osc.identity_secret.as_deref() else {
            return self.fallback(ns, &infra).await;
        };
        // CAPO's default when cloudName is empty.
        let cloud = osc.identity_cloud.unwrap_or_else(|| "openstack".into());
        let key = SecretKey {
            ns: ns.to_string(),
            name: secret_name.to_string(),
            cloud,
        };
        let secrets: kube::Api<Secret> = kube::Api::namespaced(self.kube.clone(), ns);
        let secret = secrets
            .get_opt(secret_name)
            .await
            .map_err(|e| unreachable(format!("Secret {ns}/{secret_name}"), e))?
            .ok_or_else(|| CredentialError::SecretMissing {
                cluster: cluster.clone(),
                ns: ns.to_string(),
                name: secret_name.to_string(),
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some((v, os)) = self.sessions.lock().unwrap().get(&key)
            && *v == version
        {
            return Ok(os.clone());
        }
        let os = login_with_secret(&key, &secret).await?;
        self.sessions
            .lock()
            .unwrap()
            .insert(key, (version, os.clone()));
        Ok(os)
    }

    async fn fallback(&self, ns: &str, osc: &str) -> Result<OpenStack, CredentialError> {
        let Some(f) = &self.fallback else {
            return Err(CredentialError::NoIdentity {
                ns: ns.to_string(),
                name: osc.to_string(),
            });
        };
        self.fallback_session
            .get_or_try_init(|| async {
                let origin = f.clouds_yaml.display().to_string();
                let bad = |field: &str, reason: String| CredentialError::BadSecret {
                    ns: String::new(),
                    name: origin.clone(),
                    field: field.to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(&f.clouds_yaml)
                    .map_err(|e| bad("(file)", e.to_string()))?;
                let key = SecretKey {
                    ns: String::new(),
                    name: origin.clone(),
                    cloud: f.cloud.clone(),
                };
                login(&key, &text, None).await
            })
            .await
            .cloned()
    }
}

/// Reads `clouds.yaml` (and `cacert`) from the identity Secret and logs in.
async fn login_with_secret(key: &SecretKey, secret: &Secret) -> Result<OpenStack, CredentialError> {
    let data = secret.data.clone().unwrap_or_default();
    let string_data = secret.string_data.clone().unwrap_or_default();
    let bad = |field: &str, reason: &str| CredentialError::BadSecret {
        ns: key.ns.clone(),
        name: key.name.clone(),
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let text = match (data.get("clouds.yaml"), string_data.get("clouds.yaml")) {
        (Some(b), _) => {
            String::from_utf8(b.0.clone()).map_err(|_| bad("clouds.yaml", "is not UTF-8 text"))?
        }
        (None, Some(s)) => s.clone(),
        (None, None) => return Err(bad("clouds.yaml", "the Secret has no key `clouds.yaml`")),
    };
    // clusterctl's templates write `cacert` even when there is none (an empty or blank
    // value): that means "no extra CA", as CAPO reads it.
    let cacert = data
        .get("cacert")
        .map(|b| b.0.clone())
        .filter(|c| !c.iter().all(u8::is_ascii_whitespace));
    login(key, &text, cacert).await
}

/// Logs in as `key.cloud` of a `clouds.yaml` text, through osauth's own reading of a
/// `clouds.yaml` entry (password or application-credential auth, `region_name`,
/// `interface`, project by ID or by name).
async fn login(
    key: &SecretKey,
    clouds_yaml: &str,
    cacert: Option<Vec<u8>>,
) -> Result<OpenStack, CredentialError> {
    let bad = |field: String, reason: String| CredentialError::BadSecret {
        ns: key.ns.clone(),
        name: key.name.clone(),
        field,
        reason,
    };
    // serde's messages may quote the offending value, which may be a password: only where.
    let doc: Yaml = serde_yaml::from_str(clouds_yaml)
        .map_err(|e| bad("clouds.yaml".into(), format!("is not YAML{}", at(&e))))?;
    let field = format!("clouds.yaml: clouds.{}", key.cloud);
    let Some(Yaml::Mapping(mut entry)) = doc
        .get("clouds")
        .and_then(|c| c.get(key.cloud.as_str()))
        .cloned()
    else {
        return Err(bad(field, "no such cloud entry".into()));
    };
    let auth = entry.get("auth").cloned().unwrap_or(Yaml::Null);
    let auth_url = auth
        .get("auth_url")
        .and_then(Yaml::as_str)
        .ok_or_else(|| bad(format!("{field}.auth.auth_url"), "is missing".into()))?
        .to_string();
    let project_id = auth
        .get("project_id")
        .and_then(Yaml::as_str)
        .map(str::to_string);
    let project_name = auth
        .get("project_name")
        .and_then(Yaml::as_str)
        .map(str::to_string);
    // An application credential is scoped to its project already.
    let app_credential = auth.get("application_credential_secret").is_some();
    if project_id.is_none() && project_name.is_none() && !app_credential {
        return Err(bad(
            format!("{field}.auth"),
            "names no project (project_id or project_name)".into(),
        ));
    }
    // osauth reads `cacert` as a file path: the Secret's certificate goes to a private file
    // for the moment the client is built.
    let cert_file = match &cacert {
        Some(pem) => {
            let f = private_file(pem).map_err(|e| bad("cacert".into(), e.to_string()))?;
            entry.insert(
                Yaml::from("cacert"),
                Yaml::from(f.path().display().to_string()),
            );
            Some(f)
        }
        None => None,
    };
    let config: osauth::CloudConfig =
        serde_yaml::from_value(Yaml::Mapping(entry)).map_err(|_| {
            bad(
                field.clone(),
                "is not a clouds.yaml cloud entry (a field has the wrong type)".into(),
            )
        })?;
    let started = std::time::Instant::now();
    let session = tokio::time::timeout(super::os::CALL_TIMEOUT, config.create_session()).await;
    metered_login(&session, started.elapsed());
    drop(cert_file);
    let unavailable = |reason: String| CredentialError::LoginUnavailable {
        ns: key.ns.clone(),
        name: key.name.clone(),
        cloud: key.cloud.clone(),
        reason,
    };
    let session = session
        .map_err(|_| {
            unavailable(format!(
                "Keystone gave no answer within {}",
                crate::duration::format(super::os::CALL_TIMEOUT)
            ))
        })?
        .map_err(|e| login_error(key, e))?;
    let os = OpenStack::from_session(session, project_id.clone().unwrap_or_default());
    if project_id.is_some() {
        return Ok(os);
    }
    let id = tokio::time::timeout(
        super::os::CALL_TIMEOUT,
        os.scoped_project_id(&auth_url, project_name.as_deref()),
    )
    .await
    .unwrap_or_else(|_| Err("Keystone gave no answer in time".into()))
    .map_err(|e| unavailable(format!("finding the project's ID: {e}")))?;
    Ok(OpenStack::from_session(os.into_session(), id))
}

/// Counts a login as a call to Keystone. osauth keeps the status to itself, so its class is
/// read from the kind of error (each of which osauth documents with the status it maps).
fn metered_login<T>(
    login: &Result<Result<T, osauth::Error>, tokio::time::error::Elapsed>,
    took: std::time::Duration,
) {
    use crate::metrics::{CloudService, cloud_request, code_class};
    use osauth::ErrorKind as K;
    let status = match login {
        Ok(Ok(_)) => Some(201),
        Ok(Err(e)) => match e.kind() {
            K::AuthenticationFailed => Some(401),
            K::AccessDenied => Some(403),
            K::ResourceNotFound | K::EndpointNotFound => Some(404),
            K::Conflict => Some(409),
            K::InvalidInput | K::IncompatibleApiVersion => Some(400),
            K::InternalServerError => Some(500),
            // Nothing was asked of Keystone.
            K::InvalidConfig => return,
            // Timeouts, refused connections, unreadable answers, bad configuration.
            _ => None,
        },
        Err(_) => None,
    };
    cloud_request(CloudService::Identity, code_class(status), took);
}

/// Where in the text a YAML error is, without what it says (which may quote a secret).
fn at(e: &serde_yaml::Error) -> String {
    e.location()
        .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
        .unwrap_or_default()
}

fn login_error(key: &SecretKey, e: osauth::Error) -> CredentialError {
    use osauth::ErrorKind as K;
    let (ns, name, cloud) = (key.ns.clone(), key.name.clone(), key.cloud.clone());
    let reason = e.to_string();
    match e.kind() {
        K::AuthenticationFailed | K::AccessDenied | K::ResourceNotFound => {
            CredentialError::LoginRefused {
                ns,
                name,
                cloud,
                reason,
            }
        }
        K::InvalidConfig | K::InvalidInput => CredentialError::BadSecret {
            ns,
            name,
            field: format!("clouds.yaml: clouds.{cloud}"),
            reason,
        },
        _ => CredentialError::LoginUnavailable {
            ns,
            name,
            cloud,
            reason,
        },
    }
}

/// A file only this process's user can read, removed when dropped.
fn private_file(content: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    // tempfile creates its files 0600.
    let mut f = tempfile::Builder::new()
        .prefix("capstan-cacert-")
        .suffix(".pem")
        .tempfile()?;
    f.write_all(content)?;
    f.flush()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey {
            ns: "acme".into(),
            name: "prod-cloud-config".into(),
            cloud: "openstack".into(),
        }
    }

    #[tokio::test]
    async fn a_missing_cloud_entry_names_the_secret_and_the_entry() {
        let e = login(&key(), "clouds:\n  other: {}\n", None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "Secret acme/prod-cloud-config: clouds.yaml: clouds.openstack: no such cloud entry"
        );
        assert!(!e.is_unavailable());
    }

    #[tokio::test]
    async fn an_entry_without_auth_url_or_project_is_refused_by_field() {
        let e = login(
            &key(),
            "clouds:\n  openstack:\n    auth: {username: u, password: p, project_name: x}\n",
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .ends_with("clouds.openstack.auth.auth_url: is missing"),
            "{e}"
        );
        let e = login(
            &key(),
            "clouds:\n  openstack:\n    auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: p}\n",
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("names no project"), "{e}");
    }

    #[tokio::test]
    async fn a_malformed_entry_never_quotes_its_values() {
        let e = login(
            &key(),
            "clouds:\n  openstack:\n    auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: 31415926, project_id: p}\n    region_name: [1, 2]\n",
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("wrong type"), "{e}");
        assert!(!e.to_string().contains("31415926"), "{e}");
    }

    #[tokio::test]
    async fn no_answer_from_keystone_is_unavailable_not_wrong_and_never_prints_the_password() {
        let e = login(
            &key(),
            "clouds:\n  openstack:\n    auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: hunter2, project_id: p}\n",
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(e.is_unavailable(), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }
}
