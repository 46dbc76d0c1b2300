//! Inbound TLS: a rustls acceptor built from the configured PEM files (optionally requiring
//! client certificates from a CA), rebuilt when the files change, like token files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Kubernetes renews certificates by swapping a symlinked directory; re-reading the small files
/// once a second is simpler than inotify and picks that up.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("server.tls.{key} ({path}): {reason}")]
pub struct TlsError {
    key: &'static str,
    path: String,
    reason: String,
}

fn error(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The acceptor every worker loads for each new connection.
pub(crate) type SharedAcceptor = Arc<ArcSwap<TlsAcceptor>>;

pub(crate) fn load(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error("cert_file", &config.cert_file, e))?;
    if certs.is_empty() {
        return Err(error(
            "cert_file",
            &config.cert_file,
            "no PEM certificates in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| error("key_file", &config.key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("cert_file", &config.cert_file, e))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::upstream::load_pem_certs(ca_file)
                .map_err(|e| error("client_ca_file", ca_file, e))?
            {
                roots
                    .add(cert)
                    .map_err(|e| error("client_ca_file", ca_file, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| error("client_ca_file", ca_file, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| error("key_file", &config.key_file, e))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Rebuilds the acceptor when any of the files changes; a broken update keeps the old one.
pub(crate) fn spawn_watcher(
    config: TlsConfig,
    acceptor: SharedAcceptor,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = fingerprint(&config);
        let mut failing = false;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let now = fingerprint(&config);
            if now == seen {
                continue;
            }
            match load(&config) {
                Ok(new) => {
                    acceptor.store(Arc::new(new));
                    seen = now;
                    failing = false;
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!("TLS reload failed, keeping the current certificate: {e}");
                }
                Err(_) => {}
            }
        }
    })
}

/// The files' contents; certificate files are small, and contents catch every kind of swap.
fn fingerprint(config: &TlsConfig) -> Vec<Option<Vec<u8>>> {
    [
        Some(&config.cert_file),
        Some(&config.key_file),
        config.client_ca_file.as_ref(),
    ]
    .into_iter()
    .map(|p| p.and_then(|p| std::fs::read(p).ok()))
    .collect()
}
