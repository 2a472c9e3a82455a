//! Running Capstan the way a deployment does: HTTPS with a certificate that is renewed under
//! it, the management cluster found without `--kubeconfig` (`KUBECONFIG`, the pod's service
//! account).

#[path = "../common/mod.rs"]
mod common;
mod kube_source;
mod tls;

use std::path::Path;
use std::process::Command;

use common::process::refuses;

/// `capstan serve` on a free loopback port with its own database and an admin token, and
/// none of the ambient Kubernetes settings of whoever runs the tests (each test sets the
/// ones it is about).
fn serve(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("capstan.db"))
        .env("CAPSTAN_ADMIN_TOKEN", common::TOKEN)
        .env("HOME", dir)
        .env("RUST_LOG", "info,sqlx=warn");
    for var in [
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "CAPSTAN_TLS_CERT",
        "CAPSTAN_TLS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_postgresql_url_is_refused_until_the_store_supports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    cmd.env(
        "CAPSTAN_DATABASE_URL",
        "postgres://capstan:s3cret@db/capstan",
    );
    let err = refuses(cmd);
    assert!(err.contains("issue 14") && !err.contains("s3cret"), "{err}");
    assert!(!dir.path().join("capstan.db").exists());
}
