//! Bodies in both directions: client body faults, upstream framing conflicts, and the
//! process-wide replay buffer (`server.max_replay_buffer_bytes`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::labels::ClientBodyFault;
use super::register::register;

#[derive(Clone)]
pub(crate) struct BodyMetrics {
    client_faults: [IntCounter; 3],
    framing_conflicts: IntCounter,
    replay_bytes: IntGauge,
    replay_unbudgeted: IntCounter,
}

impl BodyMetrics {
    pub(super) fn new(registry: &Registry) -> BodyMetrics {
        let faults: IntCounterVec = register(
            registry,
            "hubspot_proxy_client_body_errors_total",
            "Request bodies the client failed to deliver (malformed, aborted, stalled); never counted as upstream errors.",
            &["kind"],
        );
        BodyMetrics {
            client_faults: ClientBodyFault::LABELS.map(|k| faults.with_label_values(&[k])),
            framing_conflicts: register(
                registry,
                "hubspot_proxy_upstream_framing_conflicts_total",
                "Upstream answers with both Transfer-Encoding and Content-Length; the length was dropped (RFC 9112 §6.3).",
                &[],
            ),
            replay_bytes: register(
                registry,
                "hubspot_proxy_replay_buffer_bytes",
                "Bytes of request bodies held for replay now, across all workers.",
                &[],
            ),
            replay_unbudgeted: register(
                registry,
                "hubspot_proxy_replay_budget_exhausted_total",
                "Requests streamed without a replay copy because server.max_replay_buffer_bytes was in use.",
                &[],
            ),
        }
    }

    pub(crate) fn client_fault(&self, fault: ClientBodyFault) {
        self.client_faults[fault as usize].inc();
    }

    pub(crate) fn framing_conflict(&self) {
        self.framing_conflicts.inc();
    }

    /// The gauge of bytes held for replay, moved by the budget's reservations.
    pub(crate) fn replay_bytes(&self) -> &IntGauge {
        &self.replay_bytes
    }

    pub(crate) fn replay_unbudgeted(&self) {
        self.replay_unbudgeted.inc();
    }
}
