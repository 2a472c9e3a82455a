//! The `capstan` command line: `serve`, the API client commands (`jobs`, `schedules`) and
//! `bench`. Each subcommand parses its flags here and hands off; nothing is decided in main.

mod client;
mod exit;
mod output;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::serve::{ServeOptions, serve};

#[derive(Debug, Parser)]
#[command(
    name = "capstan",
    version,
    about = "Durable jobs for the worker nodes of Cluster API clusters on OpenStack",
    long_about = exit::HELP
)]
pub struct Cli {
    /// Log one JSON object per line instead of human-readable lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine, the scheduler and the HTTP API.
    Serve(Box<ServeArgs>),
    /// Submit, inspect and steer jobs on a running server.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Manage cron schedules that enqueue jobs.
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// Run the simulated cloud (OpenStack APIs over HTTP) and write its clouds.yaml.
    Sim(SimArgs),
    /// Measure the engine and print figures.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// SQLite database file (created if absent).
    #[arg(long, default_value = "capstan.db")]
    pub db: PathBuf,
    /// Tenants and tokens (YAML); see README.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Load workflows from this directory instead of the built-in ones.
    #[arg(long)]
    pub workflows: Option<PathBuf>,
    /// An admin bearer token, without a config file.
    #[arg(long, env = "CAPSTAN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<crate::config::Secret>,
    /// A bearer token `/metrics` then requires (`Authorization: Bearer <token>`); without
    /// one `/metrics` is open and names no tenant.
    #[arg(long, env = "CAPSTAN_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<crate::config::Secret>,
    /// How long a job's claim lasts without a heartbeat (a crashed worker's jobs resume after it).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease: std::time::Duration,
    /// A schedule may not fire more often than this (a cron with a seconds field is
    /// refused below it).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub schedule_min_interval: std::time::Duration,
    /// Run the simulated cloud in this process and work on it (the embedded default).
    #[arg(long)]
    pub sim: bool,
    /// With --sim: where the simulator writes kubeconfig and clouds.yaml (a temp dir by default).
    #[arg(long, requires = "sim")]
    pub state_dir: Option<PathBuf>,
    /// With --sim: a scenario file (YAML); the built-in demo cloud by default.
    #[arg(long, requires = "sim")]
    pub scenario: Option<PathBuf>,
    /// With --sim: simulated seconds per real second.
    #[arg(long, requires = "sim", default_value_t = 1.0)]
    pub time_scale: f64,
    /// The management cluster's kubeconfig (a real cloud; not with --sim). Without it,
    /// KUBECONFIG, then ~/.kube/config, then the pod's service account (in a cluster) are
    /// used, as kubectl would; with none of them only the smoke kind runs. Each cluster's
    /// OpenStack credentials are the Secret its OpenStackCluster names in spec.identityRef.
    #[arg(long, conflicts_with = "sim")]
    pub kubeconfig: Option<PathBuf>,
    /// A fallback clouds.yaml, used only for clusters whose OpenStackCluster names no
    /// identityRef (off unless given).
    #[arg(long, conflicts_with = "sim")]
    pub clouds_yaml: Option<PathBuf>,
    /// The entry of the fallback clouds.yaml to use.
    #[arg(long, default_value = "openstack", requires = "clouds_yaml")]
    pub cloud: String,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). The files are read
    /// again when they change, so a renewed certificate needs no restart.
    #[arg(long, env = "CAPSTAN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CAPSTAN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A PostgreSQL URL for the store: not supported yet (issue 14), so serve refuses it
    /// rather than keep the jobs in a SQLite file nobody meant to use.
    #[arg(long, env = "CAPSTAN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<crate::config::Secret>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The lab mode: a real apiserver (this kubeconfig) runs CAPI and CAPO; the simulator
    /// serves only OpenStack and registers the booted servers' Nodes there.
    #[arg(long)]
    pub external_kube: Option<PathBuf>,
    /// With --external-kube: the kubelets follow the real Nova of this clouds.yaml (the
    /// upstream lab's real OpenStack) instead of the simulated one.
    #[arg(long, requires = "external_kube")]
    pub follow_nova: Option<PathBuf>,
    /// The clouds.yaml entry --follow-nova logs in as: an admin's, so that every project's
    /// servers are listed.
    #[arg(
        long,
        default_value = "capstan-lab-cloud-admin",
        requires = "follow_nova"
    )]
    pub follow_cloud: String,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8780")]
    pub listen: SocketAddr,
    /// Where to write clouds.yaml (a new temporary directory by default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A scenario file (YAML); the built-in demo cloud by default.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Seed for the IDs the cloud hands out.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds per real second: 60 makes a server's 20 s boot take a third of a second.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
}

fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s)
}

/// Where the server is and who we are.
#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// Server URL.
    #[arg(
        long,
        env = "CAPSTAN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "CAPSTAN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<crate::config::Secret>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Submit a job from a JSON file (`-` for standard input).
    Submit {
        file: PathBuf,
        /// Return the first job for a repeated key instead of submitting twice.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a job with its nodes and what each is waiting for.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a job's history.
    Events {
        id: String,
        /// Keep printing new events until the job finishes.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Live progress of each node until the job finishes or needs input; exits with the
    /// job's code (0 succeeded, 3 failed, 4 cancelled, 5 needs input).
    Watch {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a job at its next safe point.
    Cancel {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Continue a job whose nodes needed input, after amending them.
    Resume {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Amend a needs_input node's spec with a JSON object (merge patch).
    Amend {
        id: String,
        node: String,
        patch: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a schedule: NAME, a cron expression and a job template file.
    Create {
        name: String,
        cron: String,
        job_file: PathBuf,
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        remote: Remote,
    },
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a schedule's cron expression, template or enabled flag.
    Update {
        id: String,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        job_file: Option<PathBuf>,
        #[arg(long)]
        enabled: Option<bool>,
        #[command(flatten)]
        remote: Remote,
    },
    Delete {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// N jobs x K no-op steps on a file database, against the raw-transaction floor.
    Engine(crate::bench::EngineBenchArgs),
    /// The simulator grown to N running worker Machines: settle time and memory.
    Sim(crate::bench::SimBenchArgs),
    /// N workers through Capstan versus through a MachineSet, and Capstan's requests per node.
    ScaleOut(crate::bench::scale_out::ScaleOutBenchArgs),
}

async fn run_sim(a: SimArgs) -> anyhow::Result<()> {
    let state_dir = a.state_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("capstan-sim-{}", uuid::Uuid::new_v4().simple()))
    });
    let opts = crate::sim::SimOptions {
        listen: a.listen,
        state_dir,
        scenario: a.scenario,
        seed: a.seed,
        time_scale: a.time_scale,
        external_kube: a.external_kube,
        follow_nova: a.follow_nova.map(|p| (p, a.follow_cloud)),
    };
    let sim = crate::sim::Sim::start(&opts).await?;
    // Tests and scripts read these lines.
    println!("capstan sim: listening on http://{}", sim.addr);
    println!("capstan sim: keystone {}", sim.auth_url());
    println!(
        "capstan sim: clouds.yaml {} (cloud {})",
        sim.clouds_yaml.display(),
        crate::sim::CLOUD_NAME
    );
    println!("capstan sim: kubeconfig {}", sim.kubeconfig.display());
    sim.run_until_stopped().await
}

/// `serve --sim`: the simulator in this process, on a free loopback port.
async fn start_embedded_sim(
    state_dir: Option<PathBuf>,
    scenario: Option<PathBuf>,
    time_scale: f64,
) -> anyhow::Result<crate::sim::Sim> {
    let state_dir = match state_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("capstan-sim-{}", std::process::id())),
    };
    let opts = crate::sim::SimOptions {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        state_dir,
        scenario,
        seed: 1,
        time_scale,
        external_kube: None,
        follow_nova: None,
    };
    let sim = crate::sim::Sim::start(&opts).await?;
    println!("capstan: simulated cloud on http://{}", sim.addr);
    println!("capstan: kubeconfig {}", sim.kubeconfig.display());
    println!(
        "capstan: clouds.yaml {} (cloud {})",
        sim.clouds_yaml.display(),
        crate::sim::CLOUD_NAME
    );
    Ok(sim)
}

/// `serve`'s management cluster: `--kubeconfig`, else what `Config::infer` would find
/// (`KUBECONFIG`, `~/.kube/config`, the pod's service account), else none (only `smoke` runs).
fn management_cluster(
    kubeconfig: Option<PathBuf>,
    clouds_yaml: Option<PathBuf>,
    cloud: String,
) -> anyhow::Result<Option<crate::cloud::CloudConfig>> {
    let Some(kube) = kubeconfig
        .map(crate::cloud::KubeSource::File)
        .or_else(crate::cloud::KubeSource::discover)
    else {
        if clouds_yaml.is_some() {
            anyhow::bail!(
                "--clouds-yaml needs a management cluster: give --kubeconfig, set KUBECONFIG, \
                 or run in a pod with a service account"
            );
        }
        tracing::info!(
            "no management cluster (no --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster \
             service account): only the smoke kind runs"
        );
        return Ok(None);
    };
    Ok(Some(crate::cloud::CloudConfig {
        kube,
        fallback: clouds_yaml.map(|clouds_yaml| crate::cloud::Fallback { clouds_yaml, cloud }),
    }))
}

pub fn main(cli: Cli) -> ExitCode {
    // A benchmark should not measure its own log lines.
    let default_log = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info,sqlx=warn",
    };
    crate::telemetry::init(cli.log_json, default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capstan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => {
                let a = *a;
                if a.database_url.is_some() {
                    anyhow::bail!(
                        "--database-url (CAPSTAN_DATABASE_URL): the PostgreSQL store is not there \
                         yet (issue 14); unset it and keep the database in --db (SQLite)"
                    );
                }
                let mut opts = ServeOptions::new(a.listen, a.db);
                opts.config = a.config;
                opts.workflows = a.workflows;
                opts.admin_token = a.admin_token;
                opts.metrics_token = a.metrics_token;
                opts.lease = a.lease;
                opts.schedule_min_interval = a.schedule_min_interval;
                opts.tls = a
                    .tls_cert
                    .zip(a.tls_key)
                    .map(|(cert, key)| crate::tls::TlsFiles { cert, key });
                let mut registry = crate::engine::step::Registry::new();
                crate::lifecycle::register(&mut registry);
                // The simulator lives as long as the server; the engine reaches it only
                // through the files it writes, over loopback HTTP.
                let mut _sim = None;
                if a.sim {
                    let sim = start_embedded_sim(a.state_dir, a.scenario, a.time_scale).await?;
                    opts.cloud = Some(crate::cloud::CloudConfig {
                        kube: crate::cloud::KubeSource::File(sim.kubeconfig.clone()),
                        fallback: None,
                    });
                    _sim = Some(sim);
                } else {
                    opts.cloud = management_cluster(a.kubeconfig, a.clouds_yaml, a.cloud)?;
                }
                serve(opts, registry).await
            }
            Command::Sim(a) => run_sim(a).await,
            Command::Jobs(cmd) => client::jobs(cmd).await,
            Command::Schedules(cmd) => client::schedules(cmd).await,
            Command::Bench(BenchCmd::Engine(args)) => crate::bench::engine(args).await,
            Command::Bench(BenchCmd::Sim(args)) => crate::bench::sim(args).await,
            Command::Bench(BenchCmd::ScaleOut(args)) => crate::bench::scale_out::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capstan: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}
