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

use crate::config::Secret;
use crate::serve::{ServeOptions, serve};
use crate::store::DbLocation;

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
    /// A cluster's Machines: phase, health, addresses and the job that made each.
    Nodes(ClusterArgs),
    /// The quota and usage of a cluster's OpenStack project.
    Quota(ClusterArgs),
    /// The clusters you may see.
    Clusters {
        #[command(flatten)]
        remote: Remote,
    },
    /// What a cluster's project offers: flavors, images, networks.
    Catalog(ClusterArgs),
    /// Print a shell completion script: `capstan completion bash > /etc/bash_completion.d/capstan`.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Run the simulated cloud (OpenStack APIs over HTTP) and write its clouds.yaml.
    Sim(SimArgs),
    /// Measure the engine and print figures.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Check or migrate the store's schema, e.g. before rolling out a new version.
    #[command(subcommand)]
    Db(DbCmd),
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Apply this binary's pending migrations (replicas also do on start; this lets an
    /// operator migrate first, then roll out).
    Migrate(DbArgs),
    /// Say whether the database is at this binary's schema: exit 0 if it is, 1 if it needs
    /// migrating, was migrated by a newer binary, or is not Capstan's.
    Check(DbArgs),
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// The store: a SQLite file or a postgres:// URL.
    #[arg(long, env = "CAPSTAN_DB", hide_env_values = true)]
    pub db: Secret,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The store: a SQLite file (created if absent), or a PostgreSQL database
    /// (`postgres://user:password@host:5432/db?sslmode=require`) that several replicas
    /// share with no leader. The password is never logged.
    #[arg(
        long,
        env = "CAPSTAN_DB",
        hide_env_values = true,
        default_value = "capstan.db"
    )]
    pub db: Secret,
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
    /// With --sim: where the simulator writes kubeconfig and clouds.yaml (by default `<db>.sim/`
    /// beside the database, private to its owner and rewritten on each start).
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
}

/// A cluster named on the command line.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster as NAMESPACE/NAME (e.g. default/demo).
    #[arg(value_name = "NS/NAME")]
    pub cluster: String,
    #[command(flatten)]
    pub remote: Remote,
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

// Where the server is, who we are and how answers print: flattened into every client
// command (a doc comment here would become the about text of subcommands without their own).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Server and output")]
pub struct Remote {
    /// The Capstan server's base URL.
    #[arg(
        long,
        env = "CAPSTAN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A PEM file of certificates to trust for an `https://` --url besides the system's
    /// roots: the server's own CA (or its self-signed certificate).
    #[arg(long, env = "CAPSTAN_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// The bearer token to send (`capstan.admin-token` beside the database on a first run).
    #[arg(long, env = "CAPSTAN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<crate::config::Secret>,
    /// How to print answers: a table, a wider table, or the server's JSON as JSON or YAML.
    #[arg(
        long,
        short = 'o',
        value_enum,
        default_value_t = output::Format::Table,
        global = true
    )]
    pub output: output::Format,
    /// The same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print tables without their header row.
    #[arg(long, global = true)]
    pub no_headers: bool,
}

impl Remote {
    /// The format asked for, `--json` winning over `-o`.
    pub fn format(&self) -> output::Format {
        if self.json {
            output::Format::Json
        } else {
            self.output
        }
    }
}

/// How long `jobs wait` waits and how long a stream keeps reconnecting to a server gone away.
#[derive(Debug, Args, Clone)]
pub struct Patience {
    /// Give up reconnecting after the server has been unreachable this long (exit 8).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub reconnect_for: std::time::Duration,
}

/// A job file: YAML or JSON, by its extension or its first character; `-` for standard input.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct JobFile {
    /// The job file (YAML or JSON; `-` for standard input).
    #[arg(value_name = "FILE")]
    pub path: Option<PathBuf>,
    /// The job file, as an option (`-f job.yaml`).
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    pub flag: Option<PathBuf>,
}

impl JobFile {
    pub fn path(&self) -> &std::path::Path {
        self.path
            .as_deref()
            .or(self.flag.as_deref())
            .expect("clap requires one of the two")
    }
}

/// What `jobs wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// Until the job succeeds; ends early (with its code) when it fails, is cancelled or
    /// needs input.
    Succeeded,
    /// Until the job has finished, however it ends; a job needing input is waited through
    /// (an operator may amend and resume it).
    Terminal,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Submit a job from a YAML or JSON file.
    Submit {
        #[command(flatten)]
        file: JobFile,
        /// Return the first job for a repeated key instead of submitting twice.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List jobs, newest first, following the server's pages.
    List {
        /// Only jobs of this kind (scale_out, delete_nodes, repair, ...).
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs in this state (queued, running, needs_input, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs on this cluster (NS/NAME).
        #[arg(long)]
        cluster: Option<String>,
        /// Only this tenant's jobs (admins; others see only their own tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Print at most this many jobs.
        #[arg(long, default_value_t = 50, conflicts_with = "all")]
        limit: u32,
        /// Print every job, however many pages that takes.
        #[arg(long)]
        all: bool,
        /// Start after this job (the cursor a previous listing printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Jobs asked for per request (the server allows 1 to 500).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
        page_size: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a job with its nodes, what each is waiting for and, once failed, why.
    #[command(visible_alias = "get")]
    Show {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a job's history, every page of it.
    Events {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        /// Keep printing new events until the job finishes, reconnecting if the server goes
        /// away; then exit with the job's code.
        #[arg(long, short)]
        follow: bool,
        /// Events asked for per request.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        page_size: u32,
        #[command(flatten)]
        patience: Patience,
        #[command(flatten)]
        remote: Remote,
    },
    /// Live progress of each node until the job finishes or needs input; exits with the
    /// job's code (0 succeeded, 3 failed, 4 cancelled, 5 needs input).
    Watch {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        #[command(flatten)]
        patience: Patience,
        #[command(flatten)]
        remote: Remote,
    },
    /// Wait, printing nothing, until the job reaches a state; exits with the job's code as
    /// `watch` does (9 when --timeout passes first).
    Wait {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        /// What to wait for.
        #[arg(long = "for", value_name = "STATE", value_enum, default_value_t = WaitFor::Succeeded)]
        until: WaitFor,
        /// Give up after this long (e.g. 90s, 10m); without it, wait as long as it takes.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        patience: Patience,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a job at its next safe point.
    Cancel {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Continue a job whose nodes needed input, after amending them.
    Resume {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Amend a needs_input node's spec with a JSON object (merge patch).
    Amend {
        /// The job's ID, or a prefix of it that names one job.
        id: String,
        /// The node's name.
        node: String,
        /// The fields to change, as a JSON object (`null` removes a field).
        patch: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// List the schedules you may see.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a schedule: NAME, a cron expression and a job template file.
    Create {
        /// The schedule's name.
        name: String,
        /// When it fires: a cron expression (`0 3 * * *`, or with a seconds field first).
        cron: String,
        /// The job it submits each time (YAML or JSON; `-` for standard input).
        job_file: PathBuf,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one schedule.
    Show {
        /// The schedule's ID.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a schedule's cron expression, template or enabled flag.
    Update {
        /// The schedule's ID.
        id: String,
        /// A new cron expression.
        #[arg(long)]
        cron: Option<String>,
        /// A new job template file (YAML or JSON).
        #[arg(long)]
        job_file: Option<PathBuf>,
        /// Switch it on (true) or off (false).
        #[arg(long)]
        enabled: Option<bool>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a schedule (the jobs it submitted stay).
    Delete {
        /// The schedule's ID.
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

/// The store `--db` names. Read here rather than by clap, whose refusal would print the
/// value, a URL's password included.
fn db_location(raw: &Secret) -> anyhow::Result<DbLocation> {
    DbLocation::parse(raw.expose()).map_err(|e| anyhow::anyhow!("--db (CAPSTAN_DB) {e}"))
}

/// `capstan db migrate|check`.
async fn db(cmd: DbCmd) -> anyhow::Result<()> {
    use crate::store::Store;
    match cmd {
        DbCmd::Check(a) => {
            let db = db_location(&a.db)?;
            let s = Store::check(&db).await?;
            if s.current() {
                println!(
                    "capstan: {} is at migration {}, this binary's schema",
                    db, s.applied
                );
                Ok(())
            } else {
                anyhow::bail!(
                    "{} is at migration {}; this binary needs {}: run `capstan db migrate`",
                    db,
                    s.applied,
                    s.known
                )
            }
        }
        DbCmd::Migrate(a) => {
            let db = db_location(&a.db)?;
            let before = Store::check(&db).await?;
            drop(Store::open(&db).await?);
            let after = Store::check(&db).await?;
            if before.applied == after.applied {
                println!(
                    "capstan: {} was already at migration {}; nothing to do",
                    db, after.applied
                );
            } else {
                println!(
                    "capstan: migrated {} from migration {} to {}",
                    db, before.applied, after.applied
                );
            }
            Ok(())
        }
    }
}

/// `serve --sim`: the simulator in this process, on a free loopback port. Its kubeconfig and
/// clouds.yaml (which holds a password) go beside the database, in `<db>.sim/` (mode 0700),
/// rewritten on each start: one private place per database that a `kill -9` leaves nothing
/// extra in, instead of a new directory in the system temp dir on every run. With a
/// PostgreSQL store there is no such file: `--state-dir` is required.
async fn start_embedded_sim(
    db: &DbLocation,
    state_dir: Option<PathBuf>,
    scenario: Option<PathBuf>,
    time_scale: f64,
) -> anyhow::Result<crate::sim::Sim> {
    let state_dir = match (state_dir, db.file()) {
        (Some(d), _) => d,
        (None, None) => anyhow::bail!(
            "--sim with a PostgreSQL --db needs --state-dir: there is no database file to keep \
             the simulated cloud's state beside"
        ),
        (None, Some(db)) => {
            let dir = db.with_extension("sim");
            private_dir(&dir)?;
            dir
        }
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

/// Creates `dir` readable only by its owner, or makes an existing one so.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// `capstan completion SHELL`. clap_complete writes the script from the very definitions the
/// parser uses, so completion cannot drift from the flags.
fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    // Into a buffer first: clap_complete panics on a write error (`| head` closing the pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "capstan", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
                let db = db_location(&a.db)?;
                let mut opts = ServeOptions::new(a.listen, db.clone());
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
                    let sim =
                        start_embedded_sim(&db, a.state_dir, a.scenario, a.time_scale).await?;
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
            Command::Nodes(a) => client::cluster_view(a, client::ClusterView::Nodes).await,
            Command::Quota(a) => client::cluster_view(a, client::ClusterView::Quota).await,
            Command::Catalog(a) => client::cluster_view(a, client::ClusterView::Catalog).await,
            Command::Clusters { remote } => client::clusters(remote).await,
            Command::Completion { shell } => completion(shell),
            Command::Bench(BenchCmd::Engine(args)) => crate::bench::engine(args).await,
            Command::Bench(BenchCmd::Sim(args)) => crate::bench::sim(args).await,
            Command::Bench(BenchCmd::ScaleOut(args)) => crate::bench::scale_out::run(args).await,
            Command::Db(cmd) => db(cmd).await,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand and every argument a user can type says what it is for.
    #[test]
    fn every_subcommand_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "capstan", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    /// No subcommand borrows the about text of the options it shares with the others.
    #[test]
    fn each_subcommand_has_its_own_about() {
        let root = Cli::command();
        let schedules = root.find_subcommand("schedules").unwrap();
        let abouts: Vec<String> = schedules
            .get_subcommands()
            .filter_map(|s| s.get_about().map(|a| a.to_string()))
            .collect();
        let distinct: std::collections::HashSet<&String> = abouts.iter().collect();
        assert_eq!(distinct.len(), abouts.len(), "{abouts:#?}");
    }

    #[test]
    fn a_job_file_is_given_once_by_position_or_by_flag() {
        for args in [
            &["capstan", "jobs", "submit", "job.yaml"][..],
            &["capstan", "jobs", "submit", "-f", "job.yaml"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Jobs(JobsCmd::Submit { file, .. }) = cli.command else {
                panic!("{args:?}")
            };
            assert_eq!(file.path(), std::path::Path::new("job.yaml"));
        }
        assert!(Cli::try_parse_from(["capstan", "jobs", "submit"]).is_err());
        assert!(Cli::try_parse_from(["capstan", "jobs", "submit", "a", "-f", "b"]).is_err());
    }

    #[test]
    fn json_is_an_alias_of_output_json() {
        let cli = Cli::try_parse_from(["capstan", "jobs", "list", "--json"]).unwrap();
        let Command::Jobs(JobsCmd::List { remote, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(remote.format(), output::Format::Json);
        let cli = Cli::try_parse_from(["capstan", "jobs", "list", "-o", "yaml"]).unwrap();
        let Command::Jobs(JobsCmd::List { remote, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(remote.format(), output::Format::Yaml);
    }
}
