//! How Capstan reaches a cloud: the management cluster through kube-rs (a kubeconfig) and
//! OpenStack through osauth sessions made with each cluster's own credentials
//! (`credentials.rs`). Lifecycle steps get these clients; nothing here knows whether the
//! cloud is real or simulated.

pub mod capi;
pub mod credentials;
pub mod marks;
pub mod os;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use credentials::{CredentialError, Fallback};

/// Where the management cluster is, and the optional server-wide OpenStack credentials.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub kubeconfig: PathBuf,
    /// Used only for clusters whose OpenStackCluster names no identityRef.
    pub fallback: Option<Fallback>,
}

/// A CAPI cluster: its namespace and name, as `ns/name` in requests. Parsed once at the
/// edge; there is no default namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterRef {
    pub ns: String,
    pub name: String,
}

impl ClusterRef {
    /// Reads `ns/name`; both parts must be present.
    pub fn parse(s: &str) -> Result<ClusterRef, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ClusterRef {
                    ns: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("`{s}` is not `namespace/name`")),
        }
    }

    /// The mark Capstan puts on the OpenStack resources it has made for this cluster
    /// (server metadata, port tags, floating IP descriptions): `<ns>/<name>`.
    pub fn mark(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for ClusterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

/// The connected clients.
#[derive(Clone)]
pub struct Clients {
    pub kube: kube::Client,
    pub clouds: Arc<credentials::Clouds>,
    /// The CAPI version the apiserver serves, asked once (on first use, so an apiserver
    /// that is down when Capstan starts is asked again later, not guessed).
    capi_version: Arc<tokio::sync::OnceCell<capi::CapiVersion>>,
}

impl Clients {
    pub async fn connect(c: &CloudConfig) -> anyhow::Result<Clients> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig)
            .with_context(|| format!("reading {}", c.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("kubeconfig")?;
        let kube = kube::Client::try_from(config).context("Kubernetes client")?;
        let capi_version: Arc<tokio::sync::OnceCell<capi::CapiVersion>> = Arc::default();
        let clouds = Arc::new(credentials::Clouds::new(
            kube.clone(),
            capi_version.clone(),
            c.fallback.clone(),
        ));
        Ok(Clients {
            kube,
            clouds,
            capi_version,
        })
    }

    /// CAPI and CAPO at the version the management cluster serves (discovered once).
    pub async fn capi(&self) -> Result<capi::Capi, kube::Error> {
        capi_of(&self.kube, &self.capi_version).await
    }

    /// OpenStack as `cluster` sees it: its own project, with its own credentials.
    pub async fn os(&self, cluster: &ClusterRef) -> Result<os::OpenStack, CredentialError> {
        self.clouds.for_cluster(cluster).await
    }
}

/// `kube`'s CAPI, its version discovered on first use and kept in `version`. An apiserver
/// that serves no CAPI yet is asked again next time (its calls meanwhile go to v1beta1 and
/// fail by name), so a version is never kept from before CAPI was installed.
pub(crate) async fn capi_of(
    kube: &kube::Client,
    version: &tokio::sync::OnceCell<capi::CapiVersion>,
) -> Result<capi::Capi, kube::Error> {
    if let Some(v) = version.get() {
        return Ok(capi::Capi::new(kube.clone(), *v));
    }
    let Some(v) = capi::CapiVersion::discover(kube).await? else {
        return Ok(capi::Capi::new(kube.clone(), capi::CapiVersion::V1Beta1));
    };
    if version.set(v).is_ok() {
        tracing::info!(version = %v, "the management cluster serves Cluster API {v}; Capstan speaks it");
    }
    Ok(capi::Capi::new(kube.clone(), *version.get().unwrap_or(&v)))
}

#[cfg(test)]
mod tests {
    use super::ClusterRef;

    #[test]
    fn a_cluster_is_namespace_slash_name_with_no_default() {
        let c = ClusterRef::parse("acme/prod").unwrap();
        assert_eq!((c.ns.as_str(), c.name.as_str()), ("acme", "prod"));
        assert_eq!(c.to_string(), "acme/prod");
        for bad in ["prod", "/prod", "acme/", "a/b/c", ""] {
            assert!(ClusterRef::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
