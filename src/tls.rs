//! HTTPS for the API (`serve --tls-cert/--tls-key`): rustls with the ring provider, behind
//! axum's [`Listener`] so the router and graceful shutdown are the same as over plain HTTP.
//!
//! Certificates rotate without a restart: before each new connection's handshake the
//! listener looks at the two files (modification time, size, inode) and, when either
//! changed, reads them again. A pair that does not load (half written, key not matching the
//! certificate) leaves the previous one in use and is reported once, so a cert-manager or
//! kubelet Secret update (an atomic symlink swap) is picked up by the next connection and a
//! torn update never takes the API down.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// A client gets this long to finish its handshake; a stalled one must not hold a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's certificate chain and private key are (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What we last saw of a file: enough to notice a rewrite or a replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

impl Stamp {
    async fn of(path: &Path) -> io::Result<Stamp> {
        let meta = tokio::fs::metadata(path).await?;
        Ok(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// The certificate in use, and what its files looked like when it was read.
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps when last read (whether or not that read loaded).
    seen: tokio::sync::Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the pair once; a server that cannot load its certificate does not start.
    pub async fn load(files: TlsFiles) -> anyhow::Result<Arc<Certificates>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = (Stamp::of(&files.cert).await, Stamp::of(&files.key).await);
        let (cert_stamp, key_stamp) = match stamps {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) => anyhow::bail!("--tls-cert {}: {e}", files.cert.display()),
            (_, Err(e)) => anyhow::bail!("--tls-key {}: {e}", files.key.display()),
        };
        let key = read_pair(&files, &provider)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: tokio::sync::Mutex::new((cert_stamp, key_stamp)),
        }))
    }

    /// Reads the files again if they changed since last looked at. Returns whether a new
    /// certificate is now in use.
    pub async fn refresh(&self) -> bool {
        let mut seen = self.seen.lock().await;
        let (Ok(cert), Ok(key)) = (
            Stamp::of(&self.files.cert).await,
            Stamp::of(&self.files.key).await,
        ) else {
            // Mid-swap (one file briefly absent): keep serving; the next connection looks again.
            return false;
        };
        if (&cert, &key) == (&seen.0, &seen.1) {
            return false;
        }
        *seen = (cert, key);
        match read_pair(&self.files, &self.provider) {
            Ok(new) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                info!(cert = %self.files.cert.display(), "TLS certificate changed on disk; new connections use the new one");
                true
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "TLS certificate files changed but do not load; still serving the previous certificate");
                false
            }
        }
    }

    /// The rustls configuration that always presents the current certificate.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // axum serves HTTP/1.1 only (its http2 feature is off).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Parses the chain and key and checks that the key is the certificate's.
fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "--tls-cert {}: no CERTIFICATE block in the file",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {} does not go with --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A TCP listener that hands axum only connections whose TLS handshake succeeded. Handshakes
/// run in their own tasks, so one slow client does not hold up the others.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, certs: Arc<Certificates>) -> anyhow::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()?));
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        debug!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                certs.refresh().await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    /// Stops accepting (and frees the port) when the server is done with the listener.
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
