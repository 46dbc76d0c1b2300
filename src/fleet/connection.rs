//! The fleet's Redis connection: one multiplexed `ConnectionManager` (it reconnects with backoff
//! on its own), a deadline on every call, and the shared/fallback state with its log lines.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::metrics::FleetMetrics;
use crate::config::Secret;
use crate::settings::FleetSettings;

/// Why a Redis call did not give an answer; the caller falls back, never fails the client.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.redis_url: Redis did not answer within {0} ms (fleet.timeout_ms)")]
    Timeout(u64),
    /// The message comes from redis-rs; it never holds the password (that is not in the URL).
    #[error("fleet.redis_url: Redis call failed: {0}")]
    Redis(String),
    #[error("fleet.redis_password: {0}")]
    Password(String),
    #[error("upstream.ca_file ({path}) for rediss://: {reason}")]
    CaFile { path: String, reason: String },
    #[error("fleet: {0}")]
    Sealed(#[from] super::seal::SealError),
    /// A script answered with something this build does not understand (a version mismatch).
    #[error("fleet: unexpected answer from Redis: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for FleetError {
    fn from(e: redis::RedisError) -> Self {
        FleetError::Redis(e.to_string())
    }
}

/// Reconnection pacing: the first retry comes quickly, later ones at most a second apart, so a
/// replica is back in shared mode within a couple of seconds of Redis returning.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
const RECONNECT_RETRIES: usize = 3;
/// A connection attempt to an unreachable (black-holed) host is abandoned after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A cheap clone; every clone shares the connection and the up/down state.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: ConnectionManager,
    timeout: Duration,
    state: Arc<AtomicU8>,
    metrics: FleetMetrics,
}

impl Redis {
    /// Builds the connection without waiting for it: a replica starts (in fallback) while Redis
    /// is down. `ca_file` is `upstream.ca_file`: when set, `rediss://` trusts it instead of the web roots.
    pub fn connect(
        config: &FleetSettings,
        ca_file: Option<&Path>,
        metrics: FleetMetrics,
    ) -> Result<Redis, FleetError> {
        let client = client(config, ca_file)?;
        let timeout = config.timeout;
        let manager_config = ConnectionManagerConfig::new()
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_connection_timeout(Some(CONNECT_TIMEOUT.max(timeout)))
            .set_response_timeout(Some(timeout));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(Redis {
            client,
            manager,
            timeout,
            state: Arc::new(AtomicU8::new(UNKNOWN)),
            metrics,
        })
    }

    /// Runs one Redis call under `timeout_ms`, timing it and tracking shared/fallback state.
    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, f(self.manager.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.kind() == redis::ErrorKind::Io && e.is_timeout() => {
                Err(FleetError::Timeout(self.timeout_ms()))
            }
            Ok(Err(e)) => Err(FleetError::from(e)),
            Err(_) => Err(FleetError::Timeout(self.timeout_ms())),
        };
        self.metrics
            .redis_duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.mark_up(),
            // A script or type error is a bug or a version mismatch, not Redis being away.
            Err(FleetError::Redis(_) | FleetError::Timeout(_)) => self.mark_down(&result),
            Err(_) => {}
        }
        result
    }

    /// `PING` under the deadline (used by `check`, and as the heartbeat's liveness probe).
    pub async fn ping(&self) -> Result<(), FleetError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// A dedicated subscriber connection (pub/sub cannot share the multiplexed one),
    /// opened under the connect timeout.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, FleetError> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT.max(self.timeout),
            self.client.get_async_pubsub(),
        )
        .await
        {
            Ok(result) => Ok(result?),
            Err(_) => Err(FleetError::Timeout(self.timeout_ms())),
        }
    }

    /// True while the last Redis call succeeded.
    pub(crate) fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    pub(crate) fn metrics(&self) -> &FleetMetrics {
        &self.metrics
    }

    fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }

    fn mark_up(&self) {
        if self.state.swap(UP, Ordering::Relaxed) != UP {
            self.metrics.up.set(1);
            tracing::info!("fleet: Redis answers; sharing budgets and tokens with the fleet");
        }
    }

    /// One line and one count per outage, not one per request.
    fn mark_down<T>(&self, result: &Result<T, FleetError>) {
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            self.metrics.up.set(0);
            self.metrics.fallbacks.inc();
            if let Err(e) = result {
                tracing::warn!(
                    "fleet: falling back to this replica's local share of each budget: {e}"
                );
            }
        }
    }
}

fn client(config: &FleetSettings, ca_file: Option<&Path>) -> Result<redis::Client, FleetError> {
    let mut info = config.connection.clone();
    if let Some(source) = &config.redis_password {
        let password: Secret<String> = source
            .load()
            .map_err(|e| FleetError::Password(e.to_string()))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(settings);
    }
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    match (tls, ca_file) {
        (true, Some(path)) => {
            // redis-rs builds its rustls config with the process default provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let pem = std::fs::read(path).map_err(|e| FleetError::CaFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Ok(redis::Client::build_with_tls(info, certs)?)
        }
        (true, None) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Ok(redis::Client::open(info)?)
        }
        (false, _) => Ok(redis::Client::open(info)?),
    }
}
