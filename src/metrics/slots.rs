//! How the `upstream.max_connections` slots are used, across all workers.

use prometheus::{IntCounter, IntGauge, Registry};

use super::register::register;
use super::GaugeGuard;

/// A full house and a growing wait count say the bound, not HubSpot, is what holds requests back.
#[derive(Clone)]
pub(crate) struct SlotMetrics {
    in_use: IntGauge,
    waits: IntCounter,
}

impl SlotMetrics {
    pub(super) fn new(registry: &Registry) -> SlotMetrics {
        SlotMetrics {
            in_use: register(
                registry,
                "hubspot_proxy_upstream_slots_in_use",
                "Upstream request slots (upstream.max_connections) held now.",
                &[],
            ),
            waits: register(
                registry,
                "hubspot_proxy_upstream_slot_waits_total",
                "Requests that found every upstream slot taken and had to wait.",
                &[],
            ),
        }
    }

    pub(crate) fn waited(&self) {
        self.waits.inc();
    }

    /// Counts a slot as held until the guard drops.
    pub(crate) fn held(&self) -> GaugeGuard {
        GaugeGuard::hold(&self.in_use)
    }
}
