//! How Capstan reaches a cloud: the management cluster through kube-rs (a kubeconfig or the
//! pod's service account, `kube_source.rs`) and
//! OpenStack through osauth sessions made with each cluster's own credentials
//! (`credentials.rs`). Lifecycle steps get these clients; nothing here knows whether the
//! cloud is real or simulated.

pub mod capi;
pub mod credentials;
mod kube_metered;
pub mod kube_source;
pub mod marks;
pub mod os;

use std::sync::Arc;

use anyhow::Context;

pub use crate::model::ClusterRef;
pub use credentials::{CredentialError, Fallback};
pub use kube_metered::kube_client;
pub use kube_source::KubeSource;

/// Where the management cluster is, and the optional server-wide OpenStack credentials.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub kube: KubeSource,
    /// Used only for clusters whose OpenStackCluster names no identityRef.
    pub fallback: Option<Fallback>,
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
        let config = c.kube.config().await?;
        tracing::info!(
            source = %c.kube,
            server = %config.cluster_url,
            "the management cluster's API server and credentials come from the {}",
            c.kube
        );
        let kube = kube_client(config).context("Kubernetes client")?;
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
