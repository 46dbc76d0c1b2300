//! hubspot-auth-proxy: an authenticating reverse proxy for the HubSpot API.
//!
//! `start` builds everything from [`settings::Settings`] (a checked, parsed config) and returns a [`Running`]
//! proxy; the binary and the integration tests both enter here.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod account;
mod admin;
mod admin_client;
mod admission;
mod body;
pub mod commands;
pub mod config;
mod credentials;
mod demo;
mod egress;
mod error;
pub mod fleet;
mod lifecycle;
pub mod metrics;
mod migration;
pub mod oauth_consent;
mod portal;
mod portal_state;
pub mod proxy;
pub mod ratelimit;
pub mod sandbox;
mod server;
pub mod settings;
mod shaping;
mod tls;
mod token_cell;
mod upstream;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use account::Accounts;
use lifecycle::Lifecycle;
use metrics::Metrics;
use proxy::limits::RequestLimits;
use proxy::route::Router;
use proxy::Proxy;
use server::ConnectionLimits;
use settings::Settings;
use upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Credential(#[from] credentials::CredentialError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamBuildError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the proxy's worker threads: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    Today(String),
    #[error("fleet.redis_url: {0}")]
    Fleet(fleet::FleetError),
}

/// A started proxy: its bound addresses, and the handles to reload and stop it.
pub struct Running {
    accounts: Arc<Accounts>,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    reload: Arc<Notify>,
    stop_proxy: watch::Sender<bool>,
    min_delay: Duration,
    grace: Duration,
    stop_background: watch::Sender<bool>,
    workers: workers::Workers,
    admin_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    fleet: Option<Arc<fleet::Fleet>>,
}

pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let reload = Arc::new(Notify::new());
    let (stop_background, background_rx) = watch::channel(false);
    let fleet = join_fleet(&settings, &metrics).await?;
    let (accounts, background) =
        build_accounts(&settings, &metrics, &reload, &background_rx, fleet.as_ref())?;
    let accounts = Arc::new(accounts);
    let lifecycle = Arc::new(Lifecycle::default());

    let worker_count = workers::count(settings.server.workers, settings.upstream.max_connections);
    let (proxy_listeners, proxy_addr) = workers::bind(settings.server.listen, worker_count)?;
    let admin_listener = server::bind(settings.server.admin_listen, "server.admin_listen").await?;
    let admin_addr = admin_listener.local_addr().expect("bound socket");

    let limits = ConnectionLimits {
        header_read_timeout: settings.server.header_read_timeout,
        max_header_count: settings.server.max_header_count,
        max_header_bytes: settings.server.max_header_bytes,
    };
    let grace = settings.server.shutdown_grace;
    if admission::exposed_without_protection(&settings) {
        tracing::warn!(
            listen = %settings.server.listen,
            "server.listen is not a loopback address, but server.allowed_networks is the default (loopback only), no [[clients]] keys are required and there is no [server.tls]: clients elsewhere will be refused, and anyone who can open allowed_networks gets the HubSpot credentials"
        );
    }
    let admission = Arc::new(admission::Admission::new(
        &settings.clients,
        &settings.server,
        &metrics,
    ));
    // One budget for all workers: the bound is on the process's memory.
    let replay_budget = proxy::replay::ReplayBudget::new(
        settings.server.max_replay_buffer_bytes,
        metrics.bodies().clone(),
    );
    // One report for all workers; it lives as long as the process, so SIGHUP keeps its counts.
    let report = Arc::new(migration::Report::new(
        migration::Today::from_env().map_err(StartError::Today)?,
        metrics.deprecated_api_requests(),
    ));
    let migration_hook = proxy::MigrationHook {
        report: report.clone(),
        deprecation_headers: settings.server.deprecation_headers,
    };
    let shared = proxy::Shared {
        admission,
        metrics: metrics.clone(),
        limits: RequestLimits::from_settings(&settings.server),
        access_log: settings.server.access_log,
        replay_budget,
        migration: migration_hook,
    };
    // Each worker gets its own proxy: its own upstream pool, nothing shared but Arcs.
    let proxies = (0..worker_count)
        .map(|index| {
            Ok(Proxy::new(
                Upstream::new(
                    &settings.upstream,
                    workers::slot_share(settings.upstream.max_connections, worker_count, index),
                    metrics.upstream_slots().clone(),
                )?,
                Router::new(accounts.clone(), &settings.legacy),
                shared.clone(),
            ))
        })
        .collect::<Result<Vec<_>, StartError>>()?;
    let (stop_proxy, proxy_rx) = watch::channel(false);
    let mut background = background;
    let tls = match &settings.server.tls {
        None => None,
        Some(tls_config) => {
            let acceptor: tls::SharedAcceptor =
                Arc::new(arc_swap::ArcSwap::from_pointee(tls::load(tls_config)?));
            background.push(tls::spawn_watcher(
                tls_config.clone(),
                acceptor.clone(),
                background_rx.clone(),
            ));
            Some(acceptor)
        }
    };
    let workers = workers::Workers::spawn(proxy_listeners, proxies, limits, tls, proxy_rx, grace)
        .map_err(StartError::Workers)?;
    let admin = Arc::new(admin::Admin {
        accounts: accounts.clone(),
        metrics,
        lifecycle: lifecycle.clone(),
        enable_quit: settings.server.enable_quit,
        report,
        fleet: fleet.clone(),
    });
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        move |request, _peer| {
            let response = admin.handle(&request);
            async move { response }
        },
        limits,
        None,
        background_rx,
        Duration::from_secs(1),
    ));
    tracing::info!(addr = %proxy_addr, workers = worker_count, "proxy listening");
    tracing::info!(addr = %admin_addr, "admin listening");
    Ok(Running {
        min_delay: settings.server.shutdown_min_delay,
        grace,
        accounts,
        proxy_addr,
        admin_addr,
        lifecycle,
        reload,
        stop_proxy,
        stop_background,
        workers,
        admin_task,
        background,
        fleet,
    })
}

/// With `[fleet]`, this replica's membership: connected lazily, so a replica starts (in local
/// fallback) while Redis is down. One heartbeat first, so the replica count is known early.
async fn join_fleet(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Option<Arc<fleet::Fleet>>, StartError> {
    let Some(fleet_settings) = &settings.fleet else {
        return Ok(None);
    };
    let fleet = fleet::Fleet::connect(
        fleet_settings,
        settings.upstream.ca_file.as_deref(),
        fleet::FleetMetrics::register(metrics.registry()),
    )
    .map_err(StartError::Fleet)?;
    // A failure here is already logged as "falling back"; the heartbeat keeps trying.
    let _ = fleet.beat().await;
    Ok(Some(Arc::new(fleet)))
}

type Background = Vec<JoinHandle<()>>;

fn build_accounts(
    settings: &Settings,
    metrics: &Metrics,
    reload: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
    fleet: Option<&Arc<fleet::Fleet>>,
) -> Result<(Accounts, Background), StartError> {
    let mut list = Vec::with_capacity(settings.accounts.len());
    let mut background = Vec::new();
    let portal_client = portal::client(&settings.upstream).map_err(|reason| {
        StartError::Credential(credentials::CredentialError {
            key: "upstream".into(),
            source_desc: settings.upstream.base_url.clone(),
            reason,
        })
    })?;
    for index in 0..settings.accounts.len() {
        let (account, task) = credentials::activate(settings, index, metrics, reload, stop, fleet)?;
        if matches!(account.credential, account::Credential::Static) {
            background.push(portal::spawn_static_check(
                account.clone(),
                portal_client.clone(),
                settings.upstream.base_url.clone(),
                stop.clone(),
            ));
        }
        list.push(account);
        background.extend(task);
    }
    Ok((Accounts::new(list, settings.default_account), background))
}

impl Running {
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Whether every account holds a usable token (what `/readyz` reports, draining aside).
    pub fn accounts_ready(&self) -> bool {
        let now = std::time::Instant::now();
        self.accounts
            .iter()
            .all(|a| a.token.is_ready(now) && a.portal.mismatch().is_none())
    }

    /// Re-reads file credentials now (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.notify_waiters();
    }

    /// Resolves when `POST /quitquitquit` asks for a shutdown.
    pub async fn quit_requested(&self) {
        self.lifecycle.quit_requested().await
    }

    /// Readiness turns 503 at once; requests are still served for `shutdown_min_delay_secs`
    /// so load balancers notice; then the listener stops accepting, in-flight requests finish
    /// within the grace period, and the admin listener and background tasks stop.
    pub async fn shutdown(self) {
        self.lifecycle.begin_draining();
        if !self.min_delay.is_zero() {
            tracing::info!(
                delay_secs = self.min_delay.as_secs(),
                "shutting down: not ready, still serving"
            );
            tokio::time::sleep(self.min_delay).await;
        }
        tracing::info!("shutting down: draining in-flight requests");
        let _ = self.stop_proxy.send(true);
        self.workers.finished().await;
        let _ = self.stop_background.send(true);
        // Control-plane tasks stop at once, unless something they wait on hangs (a stuck
        // secret mount); the process does not wait for them past the grace period.
        let background = async {
            let _ = self.admin_task.await;
            for task in self.background {
                let _ = task.await;
            }
        };
        let leave = async {
            if let Some(fleet) = &self.fleet {
                // Leaving at once lets the others raise their fallback share without waiting
                // for this replica's heartbeat to lapse.
                let _ = fleet.leave().await;
            }
        };
        if tokio::time::timeout(self.grace, async { tokio::join!(background, leave) })
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = self.grace.as_secs(),
                "background tasks did not stop within the grace period; exiting anyway"
            );
        }
        tracing::info!("shutdown complete");
    }
}
