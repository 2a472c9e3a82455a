//! HTTPS on the API: a client that trusts the server's certificate gets `/healthz`; a renewed
//! certificate is what the next connection sees, with no restart; a torn renewal keeps the
//! old one; plain HTTP on the HTTPS port gets nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::process::{Process, SERVE_LISTENING, refuses};
use crate::serve;

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, Vec<u8>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().to_vec(),
    )
}

/// Writes `text` to `path` the way kubelet and cert-manager do: a new file renamed over the
/// old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A new client that trusts only `cert_pem` and reports the certificate the server presented.
/// A new one each time: a client that resumed an earlier TLS session would be shown no
/// certificate at all, so it could not tell which one the server has now.
fn client_trusting(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `/healthz` on a new connection from a client trusting only `trusted` (PEM); the
/// body and the DER of the certificate the server presented.
async fn healthz(trusted: &str, url: &str) -> reqwest::Result<(String, Vec<u8>)> {
    let resp = client_trusting(trusted)
        .get(format!("{url}/healthz"))
        .send()
        .await?
        .error_for_status()?;
    let presented = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("an HTTPS response names the peer's certificate")
        .to_vec();
    Ok((resp.text().await?, presented))
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> Files {
    let files = Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    replace(&files.cert, cert);
    replace(&files.key, key);
    files
}

#[tokio::test]
async fn https_serves_the_given_certificate_and_the_next_connection_after_a_renewal_sees_the_new_one()
 {
    let dir = tempfile::tempdir().unwrap();
    let (first_pem, first_key, first_der) = certificate();
    let files = write_pair(dir.path(), &first_pem, &first_key);
    let mut cmd = serve(dir.path());
    cmd.arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key);
    let (_server, url) = Process::start_logged(cmd, SERVE_LISTENING, &dir.path().join("log"));
    let url = url
        .strip_prefix("https://")
        .map(|addr| format!("https://{addr}"))
        .unwrap_or_else(|| panic!("serve with --tls-cert announced {url}, not an https URL"));

    let (body, presented) = healthz(&first_pem, &url).await.unwrap();
    assert_eq!((body.trim(), presented), ("ok", first_der.clone()));

    // Plain HTTP on the HTTPS port: no HTTP answer at all.
    let plain = format!("http://{}", url.trim_start_matches("https://"));
    let refused = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "plain HTTP got an answer: {:?}",
        refused.map(|r| r.status())
    );

    // Renewed: the next connection gets the new certificate, without a restart.
    let (second_pem, second_key, second_der) = certificate();
    write_pair(dir.path(), &second_pem, &second_key);
    let (_, presented) = healthz(&second_pem, &url).await.unwrap();
    assert_eq!(presented, second_der, "the renewed certificate is served");
    assert!(
        healthz(&first_pem, &url).await.is_err(),
        "a client trusting only the old certificate no longer connects"
    );

    // Half a renewal (a new certificate whose key has not been written yet): the server
    // keeps presenting the pair that works.
    let (third_pem, _, _) = certificate();
    replace(&files.cert, &third_pem);
    let (_, presented) = healthz(&second_pem, &url).await.unwrap();
    assert_eq!(
        presented, second_der,
        "a torn renewal keeps the previous pair"
    );
}

#[test]
fn serve_refuses_to_start_with_a_key_that_is_not_the_certificates_and_says_which_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = certificate();
    let (_, other_key, _) = certificate();
    let files = write_pair(dir.path(), &cert, &other_key);
    // Given through the environment, as the Deployment does.
    let mut cmd = serve(dir.path());
    cmd.env("CAPSTAN_TLS_CERT", &files.cert)
        .env("CAPSTAN_TLS_KEY", &files.key);
    let err = refuses(cmd);
    assert!(
        err.contains("--tls-key") && err.contains("does not go with --tls-cert"),
        "{err}"
    );
    assert!(
        !dir.path().join("capstan.db").exists(),
        "a refused start creates no database"
    );

    let mut cmd = serve(dir.path());
    cmd.arg("--tls-cert").arg(&files.cert);
    let err = refuses(cmd);
    assert!(err.contains("--tls-key"), "{err}");
}

/// The CLI against an HTTPS server with a private certificate: refused as unreachable (8)
/// without `--cacert`, answered with it; a file with no certificate is an error naming it.
#[test]
fn the_cli_reaches_an_https_server_whose_certificate_it_is_given_with_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, key, _) = certificate();
    let files = write_pair(dir.path(), &pem, &key);
    let mut cmd = serve(dir.path());
    cmd.arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key);
    let (_server, url) = Process::start_logged(cmd, SERVE_LISTENING, &dir.path().join("log"));
    let cli = |extra: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["jobs", "list", "--url", &url])
            .args(extra)
            .env("CAPSTAN_TOKEN", crate::common::TOKEN)
            .env_remove("CAPSTAN_CACERT")
            .output()
            .unwrap();
        (
            out.status.code().expect("exited, not killed"),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = cli(&[]);
    assert_eq!(
        code, 8,
        "an untrusted certificate is an unreachable server: {err}"
    );
    let (code, err) = cli(&["--cacert".as_ref(), files.cert.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = cli(&["--cacert".as_ref(), files.key.as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--cacert") && err.contains("no certificate"),
        "{err}"
    );
}
