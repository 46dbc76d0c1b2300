//! Admission under an account's HubSpot budget: the seam between the local rolling window
//! (src/ratelimit.rs) and the fleet's shared one (src/shaping/shared.rs). The request path
//! calls `admit` and `follow_reported` and does not care which it has.

pub(crate) mod shared;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::ratelimit::{self, Budget, Held, Limiter};
use crate::settings::RateLimitSettings;

pub(crate) use shared::SharedShaper;

/// What became of a request's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Its slot has come: send now. `queued` is how long it waited for it.
    Go { queued: Duration },
    /// The wait would pass the bound: answer a local 429 with this Retry-After.
    Refused { retry_after: Duration },
}

/// An account's admission: this process's own window, or the fleet's.
pub(crate) enum Shaper {
    Local(Limiter),
    Fleet(SharedShaper),
}

impl Shaper {
    /// `None` when shaping is off (`per_ten_seconds = 0`). With a fleet the account's budget
    /// is shared by every replica in the namespace.
    pub(crate) fn new(
        account: &str,
        shaping: &RateLimitSettings,
        fleet: Option<&Arc<Fleet>>,
    ) -> Option<Shaper> {
        let budget = match shaping.per_ten_seconds {
            None => Budget::Follow,
            Some(0) => return None,
            Some(n) => Budget::Ceiling(n as usize),
        };
        let max_wait = shaping.max_queue_wait;
        Some(match fleet {
            None => Shaper::Local(Limiter::new(budget, shaping.search_per_second, max_wait)),
            Some(fleet) => Shaper::Fleet(SharedShaper::new(
                fleet.clone(),
                account,
                budget,
                shaping.search_per_second,
                max_wait,
            )),
        })
    }

    /// Waits for the request's slot, or refuses past the wait bound (`max_queue_wait_ms`, and
    /// never past `deadline`). A request dropped while it waits gives its slot back.
    /// `slotted` hears the wait as soon as the slot is granted, before waiting it out.
    pub(crate) async fn admit(
        &self,
        search: bool,
        deadline: Instant,
        slotted: impl FnOnce(Duration),
    ) -> Admit {
        match self {
            Shaper::Local(limiter) => admit_locally(limiter, search, deadline, slotted).await,
            Shaper::Fleet(shared) => shared.admit(search, deadline, slotted).await,
        }
    }

    /// HubSpot's `X-HubSpot-RateLimit-Max` for the account's bearer: shape to it, within the
    /// ceiling. Returns the previous budget when it changed.
    pub(crate) fn follow_reported(&self, max: usize) -> Option<usize> {
        match self {
            Shaper::Local(limiter) => limiter.follow_reported(max),
            Shaper::Fleet(shared) => shared.follow_reported(max),
        }
    }

    /// The 10-second budget shaped to now (fleet-wide, in fleet mode).
    pub(crate) fn limit(&self) -> usize {
        match self {
            Shaper::Local(limiter) => limiter.limit(),
            Shaper::Fleet(shared) => shared.limit(),
        }
    }

    pub(crate) fn shared(&self) -> Option<&SharedShaper> {
        match self {
            Shaper::Local(_) => None,
            Shaper::Fleet(shared) => Some(shared),
        }
    }
}

async fn admit_locally(
    limiter: &Limiter,
    search: bool,
    deadline: Instant,
    slotted: impl FnOnce(Duration),
) -> Admit {
    let now = Instant::now();
    match limiter.reserve(search, now, deadline) {
        ratelimit::Admission::SendAt(at) => {
            slotted(at.saturating_duration_since(now));
            if at > now {
                Held::new(limiter, search, at).wait().await;
            }
            Admit::Go {
                queued: at.saturating_duration_since(now),
            }
        }
        ratelimit::Admission::Refused { retry_after } => Admit::Refused { retry_after },
    }
}
