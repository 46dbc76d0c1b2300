//! Metrics: the Prometheus registry and typed handles; label sets are bounded by construction.
//!
//! - `labels`: every closed label set;
//! - `register`: the one helper that builds and registers a metric;
//! - `account`: the per-account series and their handles;
//! - `slots`, `bodies`: process-wide upstream slots and body series;
//! - `api_family`: the bounded `api` label.

mod account;
pub(crate) mod api_family;
mod bodies;
mod labels;
mod register;
mod slots;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

pub(crate) use account::AccountMetrics;
pub(crate) use bodies::BodyMetrics;
pub(crate) use labels::{
    AccountState, ClientBodyFault, ExpiredPassed, HapikeyAction, RateLimitPolicy, RetryReason,
    UpstreamErrorKind,
};
pub(crate) use slots::SlotMetrics;

use account::AccountFamilies;
use register::register;

pub struct Metrics {
    registry: Registry,
    accounts: AccountFamilies,
    inflight: IntGauge,
    denied: IntCounterVec,
    client_requests: IntCounterVec,
    upstream_slots: SlotMetrics,
    bodies: BodyMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            accounts: AccountFamilies::register(&registry),
            inflight: register(
                &registry,
                "hubspot_proxy_inflight_requests",
                "Requests being handled now.",
                &[],
            ),
            denied: register(
                &registry,
                "hubspot_proxy_denied_total",
                "Requests refused before reaching HubSpot: network, unauthenticated, forbidden.",
                &["reason"],
            ),
            client_requests: register(
                &registry,
                "hubspot_proxy_client_requests_total",
                "Requests allowed, by [[clients]] name.",
                &["client"],
            ),
            upstream_slots: SlotMetrics::new(&registry),
            bodies: BodyMetrics::new(&registry),
            registry,
        };
        register_build_info(&metrics.registry);
        register_process_collector(&metrics.registry);
        metrics
    }

    /// The counter for one refusal reason (network, unauthenticated, forbidden).
    pub(crate) fn denied(&self, reason: &str) -> IntCounter {
        self.denied.with_label_values(&[reason])
    }

    /// Requests to APIs HubSpot has deprecated or retired (the migration report's counter).
    /// Labels are bounded: accounts from the config, API families and generations by
    /// construction, four states.
    pub(crate) fn deprecated_api_requests(&self) -> IntCounterVec {
        register(
            &self.registry,
            "hubspot_proxy_deprecated_api_requests_total",
            "Requests to deprecated or unsupported HubSpot APIs, by API family, generation and support state on the day.",
            &["account", "api", "generation", "state"],
        )
    }

    /// The counter for one configured client; names come from the config, so they are bounded.
    pub(crate) fn client_requests(&self, client: &str) -> IntCounter {
        self.client_requests.with_label_values(&[client])
    }

    /// Handles for one account, resolved once at startup so requests do no label hashing.
    pub fn for_account(&self, account: &str) -> AccountMetrics {
        self.accounts.for_account(account)
    }

    pub(crate) fn inflight(&self) -> GaugeGuard {
        GaugeGuard::hold(&self.inflight)
    }

    pub(crate) fn upstream_slots(&self) -> &SlotMetrics {
        &self.upstream_slots
    }

    pub(crate) fn bodies(&self) -> &BodyMetrics {
        &self.bodies
    }

    /// For series owned elsewhere (fleet mode registers its own).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything registered.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn register_build_info(registry: &Registry) {
    let info: IntGaugeVec = register(
        registry,
        "hubspot_proxy_build_info",
        "Build information; always 1.",
        &["version"],
    );
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
}

#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(collector))
        .expect("the process collector registers once");
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_registry: &Registry) {}

/// Decrements a gauge when what it counts ends (a request's handler, a held slot), however it ends.
pub(crate) struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Counts one more on the gauge, until the guard drops.
    fn hold(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};

    use super::*;

    #[test]
    fn requests_are_counted_with_bounded_labels() {
        let metrics = Metrics::new();
        let a = metrics.for_account("main");
        a.observe(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        a.observe(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        a.observe(
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::IM_A_TEAPOT,
            Duration::ZERO,
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(
            r#"hubspot_proxy_requests_total{account="main",method="GET",status="200"} 2"#
        ));
        assert!(text.contains(r#"method="OTHER",status="418"} 1"#));
        assert!(!text.contains("BREW"));
        assert!(text.contains(r#"hubspot_proxy_build_info{version=""#));
    }
}
