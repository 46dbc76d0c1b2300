//! Fleet mode: replicas share each account's rate budget and OAuth token through Redis.
//!
//! - `connection`: the Redis connection, the per-call deadline and the shared/fallback state;
//! - `window`: fleet-wide admission, one Lua script per request on the Redis clock;
//! - `lease`: the refresher's lease and the fenced token write;
//! - `seal`: AES-256-GCM sealing of shared tokens under a key from the client secret;
//! - `tokens`: publishing and picking up sealed tokens (pub/sub, and a 1 s poll);
//! - `heartbeat`: the live replica count that sizes the fallback share;
//! - [`keys`]: the key layout (documented there and in the README).
//!
//! Nothing here fails a client request: every call has a deadline (`fleet.timeout_ms`) and an
//! error means "use the local fallback".

pub(crate) mod connection;
pub(crate) mod heartbeat;
pub mod keys;
pub(crate) mod lease;
pub(crate) mod metrics;
pub(crate) mod seal;
pub(crate) mod tokens;
pub(crate) mod window;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use connection::{FleetError, Redis};
pub(crate) use heartbeat::fallback_share;
pub use lease::FencedWrite;
pub(crate) use lease::{lease_ttl, Lease};
pub use metrics::FleetMetrics;
pub use seal::SharedToken;
pub(crate) use tokens::TokenNotice;
pub use tokens::{AccountTokens, FleetTokens};
pub use window::SharedWindow;
pub(crate) use window::{Ticket, WindowUsage};

use crate::settings::FleetSettings;

/// This replica's membership of the fleet. Its background tasks (heartbeat, token watch) stop
/// when it is dropped; call [`Fleet::leave`] first at a graceful shutdown.
pub struct Fleet {
    redis: Redis,
    namespace: String,
    replicas: Arc<AtomicUsize>,
    tokens: FleetTokens,
    heartbeat: Arc<heartbeat::Heartbeat>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Connects lazily (a replica starts in fallback if Redis is down) and starts the heartbeat
    /// and token watch. Must run inside a tokio runtime.
    pub fn connect(
        config: &FleetSettings,
        ca_file: Option<&Path>,
        metrics: FleetMetrics,
    ) -> Result<Fleet, FleetError> {
        let redis = Redis::connect(config, ca_file, metrics)?;
        let namespace = config.namespace.clone();
        let replicas = Arc::new(AtomicUsize::new(1));
        let id = format!("{:032x}", rand::random::<u128>());
        let heartbeat = Arc::new(heartbeat::Heartbeat::new(
            redis.clone(),
            keys::replicas(&namespace),
            id,
            replicas.clone(),
        ));
        let tokens = FleetTokens::new(redis.clone(), &namespace);
        let beating = heartbeat.clone();
        let tasks = vec![
            tokio::spawn(async move { beating.run_shared().await }),
            tokio::spawn(tokens.clone().run()),
        ];
        Ok(Fleet {
            redis,
            namespace,
            replicas,
            tokens,
            heartbeat,
            tasks,
        })
    }

    /// An account's fleet-wide window; build once per account at startup.
    /// `per_ten_seconds` must be > 0.
    pub fn window(
        &self,
        account: &str,
        per_ten_seconds: u32,
        search_per_second: u32,
    ) -> SharedWindow {
        SharedWindow::new(
            self.redis.clone(),
            keys::AccountKeys::new(&self.namespace, account),
            per_ten_seconds,
            search_per_second,
        )
    }

    pub fn tokens(&self) -> &FleetTokens {
        &self.tokens
    }

    /// Live replicas last seen (at least 1: this one).
    pub fn replicas(&self) -> usize {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// This replica's share of `per_ten_seconds` while Redis is away.
    pub fn fallback_share(&self, per_ten_seconds: u32) -> u32 {
        fallback_share(per_ten_seconds, self.replicas())
    }

    /// True while the last Redis call succeeded (shared mode).
    pub fn is_up(&self) -> bool {
        self.redis.is_up()
    }

    /// `PING` under `fleet.timeout_ms`.
    pub async fn ping(&self) -> Result<(), FleetError> {
        self.redis.ping().await
    }

    /// Beats once now (startup: learn N before the first fallback could need it).
    pub async fn beat(&self) -> Result<usize, FleetError> {
        self.heartbeat.beat().await
    }

    /// Leaves the replica count at shutdown.
    pub async fn leave(&self) -> Result<(), FleetError> {
        self.heartbeat.leave().await
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
