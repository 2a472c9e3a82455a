//! Where the management cluster's address and credentials come from: `--kubeconfig`, or,
//! without it, what kube-rs's `Config::infer` would find — `KUBECONFIG`, then
//! `~/.kube/config`, then the pod's service account (in-cluster).
//!
//! Unlike `Config::infer`, a source that is present but broken is an error, not a silent
//! fall-through to the next one: an operator who set `KUBECONFIG` means that cluster, and a
//! Capstan that deletes Machines must not quietly act on another. The source is logged by
//! name and API server URL only; tokens and keys never are.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use anyhow::Context;

/// The files a pod's service account is mounted as (fixed by Kubernetes).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// A kubeconfig file, its current context (`--kubeconfig`, or `~/.kube/config`).
    File(PathBuf),
    /// The files `KUBECONFIG` lists, merged the way kubectl merges them.
    KubeconfigEnv(OsString),
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT` and the token and CA
    /// under [`SERVICE_ACCOUNT_DIR`].
    InCluster,
}

impl KubeSource {
    /// The source `Config::infer` would use in this process's environment, if any.
    pub fn discover() -> Option<KubeSource> {
        Self::discover_in(|name| std::env::var_os(name), std::env::home_dir())
    }

    /// [`discover`](Self::discover) over a given environment and home directory.
    pub fn discover_in(
        env: impl Fn(&str) -> Option<OsString>,
        home: Option<PathBuf>,
    ) -> Option<KubeSource> {
        if let Some(paths) = env("KUBECONFIG").filter(|p| !p.is_empty()) {
            return Some(KubeSource::KubeconfigEnv(paths));
        }
        if let Some(file) = home
            .map(|h| h.join(".kube").join("config"))
            .filter(|f| f.is_file())
        {
            return Some(KubeSource::File(file));
        }
        // client-go's rule: in a pod when both are set.
        if env("KUBERNETES_SERVICE_HOST").is_some() && env("KUBERNETES_SERVICE_PORT").is_some() {
            return Some(KubeSource::InCluster);
        }
        None
    }

    /// The client configuration, or what is wrong with this source.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = kube::config::KubeConfigOptions::default();
        match self {
            KubeSource::File(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))
            }
            KubeSource::KubeconfigEnv(_) => kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("{self}")),
            KubeSource::InCluster => kube::Config::incluster().with_context(|| {
                format!(
                    "{self}: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are set, so \
                     Capstan runs in a pod, but the pod's service account is not mounted at \
                     {SERVICE_ACCOUNT_DIR} (automountServiceAccountToken: false?); mount it, \
                     or give --kubeconfig"
                )
            }),
        }
    }
}

impl fmt::Display for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeSource::File(path) => write!(f, "kubeconfig {}", path.display()),
            KubeSource::KubeconfigEnv(paths) => {
                write!(f, "KUBECONFIG={}", paths.to_string_lossy())
            }
            KubeSource::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    const IN_POD: [(&str, &str); 2] = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];

    #[test]
    fn kubeconfig_env_comes_first_then_the_home_file_then_the_pod() {
        let home = tempfile::tempdir().unwrap();
        let with_kubeconfig = [IN_POD[0], IN_POD[1], ("KUBECONFIG", "/a:/b")];
        assert_eq!(
            KubeSource::discover_in(env(&with_kubeconfig), Some(home.path().into())),
            Some(KubeSource::KubeconfigEnv("/a:/b".into()))
        );
        // No ~/.kube/config yet: the pod's service account.
        assert_eq!(
            KubeSource::discover_in(env(&IN_POD), Some(home.path().into())),
            Some(KubeSource::InCluster)
        );
        let file = home.path().join(".kube/config");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "apiVersion: v1\nkind: Config\n").unwrap();
        assert_eq!(
            KubeSource::discover_in(env(&IN_POD), Some(home.path().into())),
            Some(KubeSource::File(file))
        );
    }

    #[test]
    fn nothing_is_inferred_from_half_a_pod_or_an_empty_kubeconfig() {
        let home = tempfile::tempdir().unwrap();
        let half = [("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBECONFIG", "")];
        assert_eq!(
            KubeSource::discover_in(env(&half), Some(home.path().into())),
            None
        );
        assert_eq!(KubeSource::discover_in(env(&[]), None), None);
    }

    #[test]
    fn a_source_prints_its_name_and_never_a_credential() {
        assert_eq!(
            KubeSource::InCluster.to_string(),
            "in-cluster service account"
        );
        assert_eq!(
            KubeSource::File("/etc/capstan/kubeconfig".into()).to_string(),
            "kubeconfig /etc/capstan/kubeconfig"
        );
    }
}
