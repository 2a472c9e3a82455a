//! How Capstan reaches a cloud: the management cluster through kube-rs (a kubeconfig) and
//! OpenStack through an osauth session (a `clouds.yaml` entry). Lifecycle steps get these
//! clients; nothing here knows whether the cloud is real or simulated.

pub mod capi;
pub mod os;

use std::path::PathBuf;

use anyhow::Context;

/// Where the cloud's credentials are.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub kubeconfig: PathBuf,
    pub clouds_yaml: PathBuf,
    /// The entry of `clouds.yaml` to use.
    pub cloud: String,
}

/// The connected clients.
#[derive(Clone)]
pub struct Clients {
    pub kube: kube::Client,
    pub os: os::OpenStack,
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
        let os = os::OpenStack::connect(&c.clouds_yaml, &c.cloud)
            .await
            .with_context(|| format!("OpenStack cloud `{}`", c.cloud))?;
        Ok(Clients { kube, os })
    }
}
