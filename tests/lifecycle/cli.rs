//! `capstan serve --sim` as the quick start runs it, and the CLI's views of a cluster on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::process::{Process, SERVE_LISTENING};

/// `capstan serve --sim` on a free port with `db`, the system temp dir pointed at `tmp`;
/// returns it, its URL and the clouds.yaml it says it wrote.
fn serve_sim(db: &Path, tmp: &Path) -> (Process, String, PathBuf) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args([
        "serve",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--time-scale",
        "50",
    ])
    .arg("--db")
    .arg(db)
    .env("TMPDIR", tmp)
    .env_remove("CAPSTAN_ADMIN_TOKEN");
    let (process, url, told) = Process::start_telling(cmd, SERVE_LISTENING);
    let clouds_yaml = told
        .iter()
        .find_map(|l| l.strip_prefix("capstan: clouds.yaml "))
        .and_then(|rest| rest.split(" (cloud").next())
        .unwrap_or_else(|| panic!("serve --sim names its clouds.yaml: {told:?}"));
    (process, url, PathBuf::from(clouds_yaml))
}

fn capstan(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env("CAPSTAN_URL", url)
        .env("CAPSTAN_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The quick start: `serve --sim` keeps the simulator's kubeconfig and clouds.yaml (with its
/// password) beside the database, private, and reuses that place on the next start — nothing
/// is left in the system temp dir; the CLI shows the demo cluster's nodes and quota.
#[test]
fn serve_sim_keeps_its_cloud_files_beside_the_database_and_the_cli_shows_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let db = dir.path().join("capstan.db");
    let (server, url, clouds_yaml) = serve_sim(&db, tmp.path());
    assert_eq!(clouds_yaml, dir.path().join("capstan.sim/clouds.yaml"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.path().join("capstan.sim")), 0o700);
        assert_eq!(mode(&clouds_yaml), 0o600);
    }
    let token = std::fs::read_to_string(dir.path().join("capstan.admin-token")).unwrap();
    let token = token.trim();

    let (code, out, err) = capstan(&url, token, &["nodes", "default/demo"]);
    assert_eq!(code, 0, "{err}");
    let mut rows = out.lines();
    assert!(rows.next().unwrap().starts_with("MACHINE"), "{out}");
    assert_eq!(rows.count(), 3, "the demo cluster's three workers: {out}");
    let (code, out, err) = capstan(&url, token, &["quota", "default/demo", "--no-headers"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("instances ")),
        "the project's instance quota: {out}"
    );
    let (code, _, err) = capstan(&url, token, &["nodes", "default/nowhere"]);
    assert_eq!(code, 6, "no such cluster: {err}");
    let (code, _, err) = capstan(&url, token, &["quota", "demo"]);
    assert_eq!(code, 2, "not NS/NAME: {err}");
    drop(server);

    let (_again, _, reused) = serve_sim(&db, tmp.path());
    assert_eq!(reused, clouds_yaml, "the same place on the next start");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing in the system temp dir: {left:?}");
}
