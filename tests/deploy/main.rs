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
    let mut cmd = serve_no_db(dir);
    cmd.arg("--db").arg(dir.join("capstan.db"));
    cmd
}

/// [`serve`] without `--db`: the database comes from `CAPSTAN_DB` or the default.
fn serve_no_db(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CAPSTAN_ADMIN_TOKEN", common::TOKEN)
        .env("HOME", dir)
        .env("RUST_LOG", "info,sqlx=warn");
    for var in [
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "CAPSTAN_TLS_CERT",
        "CAPSTAN_TLS_KEY",
        "CAPSTAN_DB",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn an_unreachable_postgresql_server_is_refused_naming_it_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // The URL from the environment, as the deploy component passes it.
    let mut cmd = serve_no_db(dir.path());
    cmd.env(
        "CAPSTAN_DB",
        "postgres://capstan:s3cret@127.0.0.1:1/capstan",
    );
    let err = refuses(cmd);
    assert!(
        err.contains("cannot connect to postgres://capstan:")
            && err.contains("127.0.0.1:1/capstan"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!dir.path().join("capstan.db").exists());
}

#[test]
fn a_malformed_postgresql_url_is_refused_naming_the_field_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_no_db(dir.path());
    cmd.env(
        "CAPSTAN_DB",
        "postgres://capstan:s3cret@db:99999999/capstan",
    );
    let err = refuses(cmd);
    assert!(
        err.contains("--db (CAPSTAN_DB) is not a valid PostgreSQL URL (invalid port number)"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!dir.path().join("capstan.db").exists());
}
