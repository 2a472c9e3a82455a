//! The processes a test starts: `capstan serve`, `capstan sim`, or the test binary itself as
//! a server with test steps. Each prints the address it listens on to stdout once it is
//! ready; a test reads up to that line, keeps draining the rest (so the child never blocks
//! on a full pipe) and kills the process with SIGKILL when it is done with it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::console::Console;

/// What `capstan serve` prints once it accepts requests.
pub const SERVE_LISTENING: &str = "capstan: listening on ";

/// What `capstan sim` prints once it accepts requests (its kubeconfig and clouds.yaml are
/// written before).
pub const SIM_LISTENING: &str = "listening on ";

/// A child process, killed (SIGKILL: no shutdown path runs) when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Spawns `cmd` and waits for the first stdout line containing `marker`; returns the
    /// process and the rest of that line (its address). Its stderr is discarded.
    pub fn start(cmd: Command, marker: &str) -> (Process, String) {
        Process::spawn(cmd, marker, Stdio::null(), None)
    }

    /// As `start`, with stderr appended to `log` (shown if the process exits early).
    pub fn start_logged(cmd: Command, marker: &str, log: &Path) -> (Process, String) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Process::spawn(cmd, marker, file.into(), Some(log))
    }

    /// As `start`, with the lines printed before the marker's (what a server says about
    /// itself as it starts).
    pub fn start_telling(cmd: Command, marker: &str) -> (Process, String, Vec<String>) {
        Process::spawn_telling(cmd, marker, Stdio::null(), None)
    }

    fn spawn(cmd: Command, marker: &str, stderr: Stdio, log: Option<&Path>) -> (Process, String) {
        let (process, value, _) = Process::spawn_telling(cmd, marker, stderr, log);
        (process, value)
    }

    fn spawn_telling(
        mut cmd: Command,
        marker: &str,
        stderr: Stdio,
        log: Option<&Path>,
    ) -> (Process, String, Vec<String>) {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut before = Vec::new();
        let value = loop {
            match lines.next() {
                // libtest's own "test ... " prefix may share the line (a test binary as server).
                Some(line) => {
                    let line = line.unwrap();
                    if let Some((_, v)) = line.split_once(marker) {
                        break v.trim().to_string();
                    }
                    before.push(line);
                }
                None => {
                    let status = child.wait().unwrap();
                    let stderr = log
                        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                        .unwrap_or_default();
                    panic!(
                        "{:?} exited before printing {marker:?} ({status}): {stderr}",
                        cmd.get_args().collect::<Vec<_>>()
                    );
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (Process { child }, value, before)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now, rather than when dropped.
    pub fn kill(self) {}
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `capstan serve` on a free loopback port with lease 2 s, its database (a SQLite file or a
/// PostgreSQL URL) and a kubeconfig, and `token` as the admin token; callers add what else
/// they need.
pub fn serve_command(db: impl AsRef<OsStr>, kubeconfig: &Path, token: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--lease", "2s"])
        .arg("--db")
        .arg(db)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("CAPSTAN_ADMIN_TOKEN", token);
    cmd
}

/// Runs `capstan serve` (`cmd`) expecting it to refuse to start; returns its stderr.
pub fn refuses(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "serve should have refused to start");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A `capstan sim` of its own in a fresh state directory, killed when dropped.
pub struct Sim {
    /// Its base URL: the OpenStack services, the Kubernetes API and the console (`/sim/v1`).
    pub url: String,
    pub clouds_yaml: PathBuf,
    pub kubeconfig: PathBuf,
    // Dropped in this order: the process before its directory.
    process: Process,
    pub dir: tempfile::TempDir,
}

impl Sim {
    /// Starts `capstan sim` at `time_scale` simulated seconds a second, on the demo cloud or
    /// on the given scenario text, with `extra` arguments.
    pub fn start(time_scale: u32, scenario: Option<&str>, extra: &[&OsStr]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--time-scale"])
            .arg(time_scale.to_string())
            .args(extra)
            .arg("--state-dir")
            .arg(dir.path());
        if let Some(text) = scenario {
            let path = dir.path().join("scenario.yaml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--scenario").arg(path);
        }
        let (process, url) = Process::start(cmd, SIM_LISTENING);
        Sim {
            url,
            clouds_yaml: dir.path().join("clouds.yaml"),
            kubeconfig: dir.path().join("kubeconfig"),
            process,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its console: ground truth, faults, quotas.
    pub fn console(&self) -> Console {
        Console::new(&self.url)
    }
}

/// A kube-rs client from a kubeconfig file, as production builds one.
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    config.proxy_url = None;
    kube::Client::try_from(config).unwrap()
}
