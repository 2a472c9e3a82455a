//! `capstan serve`: opens the store, loads and checks the workflows, and runs the engine,
//! the scheduler and the HTTP API in one process until SIGTERM or Ctrl-C, then shuts down
//! gracefully (in-flight steps finish, leases are released).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::info;

use crate::api::{self, AppState};
use crate::config::{Auth, Config, Secret};
use crate::engine::step::Registry;
use crate::engine::{Engine, EngineConfig, workflow};
use crate::metrics::Metrics;
use crate::store::{DbLocation, Store};

/// Everything `serve` needs, from flags or from a test.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub db: DbLocation,
    pub config: Option<PathBuf>,
    /// Load workflows from this directory instead of the built-in ones.
    pub workflows: Option<PathBuf>,
    pub admin_token: Option<Secret>,
    /// The bearer token `/metrics` requires; `None` leaves it open (it names no tenant).
    pub metrics_token: Option<Secret>,
    pub lease: Duration,
    pub poll: Duration,
    pub max_jobs: usize,
    /// The cloud the lifecycle kinds work on; without one only `smoke` runs.
    pub cloud: Option<crate::cloud::CloudConfig>,
    /// A schedule may not fire more often than this.
    pub schedule_min_interval: Duration,
    /// Serve HTTPS with this certificate and key (re-read when they change); plain HTTP
    /// without.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl ServeOptions {
    pub fn new(listen: SocketAddr, db: impl Into<DbLocation>) -> ServeOptions {
        let defaults = EngineConfig::default();
        ServeOptions {
            listen,
            db: db.into(),
            config: None,
            workflows: None,
            admin_token: None,
            metrics_token: None,
            lease: defaults.lease,
            poll: defaults.poll,
            max_jobs: defaults.max_jobs,
            cloud: None,
            schedule_min_interval: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Runs the server with the given steps (the built-in ones, or a test's).
pub async fn serve(opts: ServeOptions, mut registry: Registry) -> anyhow::Result<()> {
    // The store opens only once the workflows are known good (a refused start creates no
    // database); steps that need it get it through this cell.
    let intake_cell: crate::lifecycle::IntakeCell = Arc::default();
    let clients = match &opts.cloud {
        Some(c) => {
            let clients = crate::cloud::Clients::connect(c).await?;
            info!(
                fallback_clouds_yaml = ?c.fallback.as_ref().map(|f| f.clouds_yaml.display().to_string()),
                "connected to the management cluster; each cluster's OpenStack credentials come from its identityRef Secret"
            );
            crate::lifecycle::register_cloud(&mut registry, clients.clone(), intake_cell.clone());
            Some(clients)
        }
        None => None,
    };
    let sources = match &opts.workflows {
        Some(dir) => workflow::read_dir(dir)
            .with_context(|| format!("reading workflows from {}", dir.display()))?,
        None => crate::lifecycle::workflow_sources(clients.is_some()),
    };
    if opts
        .metrics_token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        anyhow::bail!(
            "--metrics-token (CAPSTAN_METRICS_TOKEN) is empty; set a token or leave it unset"
        );
    }
    let workflows = workflow::load_all(&sources, &registry)?;
    // A certificate that does not load refuses the start before the database is touched.
    let certificates = match &opts.tls {
        Some(files) => Some(crate::tls::Certificates::load(files.clone()).await?),
        None => None,
    };
    let config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if config.tokens.is_empty() && opts.admin_token.is_none() && opts.db.file().is_none() {
        anyhow::bail!(
            "no API token configured: with a PostgreSQL --db, set CAPSTAN_ADMIN_TOKEN (or \
             tokens in --config); there is no database file to keep a local token beside"
        );
    }
    let store = Store::open(&opts.db).await?;
    let mut admin_token = opts.admin_token.clone();
    if config.tokens.is_empty() && admin_token.is_none() {
        let file = opts
            .db
            .file()
            .expect("a PostgreSQL store with no token was refused above");
        let (path, token) = local_admin_token(file)?;
        info!(
            file = %path.display(),
            "no API token configured; using the local admin token kept in this file"
        );
        admin_token = Some(token);
    }
    let auth = Arc::new(Auth::from_config(config, admin_token)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::with_scrape_token(opts.metrics_token.clone()));
    let engine_config = EngineConfig {
        lease: opts.lease,
        poll: opts.poll,
        max_jobs: opts.max_jobs,
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        store,
        Arc::new(registry),
        workflows,
        engine_config,
        metrics.clone(),
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    let mut kinds: Vec<&String> = engine.workflows().keys().collect();
    kinds.sort();
    info!(db = %opts.db, kinds = ?kinds, "capstan serving on {scheme}://{addr}");
    // Tests and scripts read the bound address from this line.
    println!("capstan: listening on {scheme}://{addr}");

    // The one way in, for the API, the scheduler and the sweeps alike.
    let admission = clients.clone().map(|clients| {
        Arc::new(crate::lifecycle::admission::Lifecycle {
            clients,
            store: engine.store().clone(),
        }) as Arc<dyn crate::engine::admission::Admission>
    });
    let intake = Arc::new(crate::engine::intake::Intake::new(
        engine.store().clone(),
        engine.workflows().clone(),
        admission,
        auth.clone(),
    ));
    let _ = intake_cell.set(intake.clone());
    let clients_for_watch = clients.clone();
    let app = api::router(AppState {
        engine: engine.clone(),
        auth,
        metrics,
        clients,
        intake: intake.clone(),
        schedule_min_interval: opts.schedule_min_interval,
        // Over TLS the session cookie is `Secure`.
        sessions: Arc::new(crate::portal::Sessions::new(certificates.is_some())),
    });
    let _watches = match &clients_for_watch {
        Some(c) => crate::lifecycle::watch::spawn(c, engine.clone()),
        None => Vec::new(),
    };
    let engine_task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let scheduler_task = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_scheduler(intake).await }
    });
    let mut http_stop = stop_rx.clone();
    let stopped = async move {
        let _ = http_stop.changed().await;
    };
    let http = async {
        match certificates {
            Some(certs) => {
                let listener = crate::tls::TlsListener::new(listener, certs)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
        .map_err(anyhow::Error::from)
    };
    let signals = async {
        shutdown_signal().await;
        info!("shutting down: finishing in-flight steps and releasing leases");
        let _ = stop_tx.send(true);
    };
    let (served, ()) = tokio::join!(http, signals);
    served?;
    let _ = tokio::join!(engine_task, scheduler_task);
    Ok(())
}

/// With no token configured, a local admin token kept beside the database (created once,
/// readable only by its owner), so the first run needs no setup and prints no secret.
fn local_admin_token(db: &std::path::Path) -> anyhow::Result<(PathBuf, Secret)> {
    let path = db.with_extension("admin-token");
    if path.exists() {
        check_private(&path)?;
    }
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.trim().is_empty()
    {
        return Ok((path, Secret::new(existing.trim())));
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
    Ok((path, Secret::new(token)))
}

/// Refuses a token file that users other than its owner may read: a token another local
/// user could have copied is not the server's secret any more.
fn check_private(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading the mode of {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} holds the admin token but its mode is {mode:04o} (group or others may read or change it); \
                 run `chmod 600 {}` if no one else has read it, or delete the file to have a new \
                 token made",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
