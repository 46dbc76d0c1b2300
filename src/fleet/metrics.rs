//! Fleet metrics: Redis health, fallbacks, call latency and the replica count.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// A Redis round trip on loopback takes well under a millisecond; the top buckets are the
/// `timeout_ms` range (1 ms to 10 s) where a call is abandoned.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

#[derive(Clone)]
pub struct FleetMetrics {
    pub(crate) up: IntGauge,
    pub(crate) fallbacks: IntCounter,
    pub(crate) redis_duration: Histogram,
    pub(crate) replicas: IntGauge,
}

impl FleetMetrics {
    /// Registers the fleet series; call once, with the proxy's registry.
    pub fn register(registry: &Registry) -> FleetMetrics {
        let up = IntGauge::new(
            "hubspot_proxy_fleet_up",
            "1 while this replica shares budgets and tokens through Redis, 0 in local fallback.",
        )
        .expect("valid metric");
        let fallbacks = IntCounter::new(
            "hubspot_proxy_fleet_fallbacks_total",
            "Times this replica lost Redis and fell back to its local share of the budget.",
        )
        .expect("valid metric");
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hubspot_proxy_fleet_redis_duration_seconds",
                "Duration of one Redis call (admission, heartbeat, token exchange).",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let replicas = IntGauge::new(
            "hubspot_proxy_fleet_replicas",
            "Live replicas in this fleet namespace, from their heartbeats.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(fallbacks.clone()),
            Box::new(redis_duration.clone()),
            Box::new(replicas.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        FleetMetrics {
            up,
            fallbacks,
            redis_duration,
            replicas,
        }
    }

    /// Handles registered nowhere, for `check` and tests that do not scrape.
    pub fn unregistered() -> FleetMetrics {
        FleetMetrics::register(&Registry::new())
    }
}
