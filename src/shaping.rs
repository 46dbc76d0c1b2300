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

#[cfg(test)]
mod tests {
    //! Local admission under tokio's paused clock: every wait is exact and takes no real time.
    use super::*;
    // The local windows are HubSpot's with a margin (10.25 s and 1.1 s).
    use crate::ratelimit::{ONE_SECOND, TEN_SECONDS};

    fn shaper(per_ten_seconds: u32, max_queue_wait_ms: u64) -> Shaper {
        let shaping = crate::config::RateLimitConfig {
            per_ten_seconds: Some(per_ten_seconds),
            search_per_second: 2,
            max_queue_wait_ms,
            ..Default::default()
        };
        Shaper::new("main", &RateLimitSettings::from(&shaping), None).expect("shaping on")
    }

    /// Admits one request; returns its answer and when it was let go, from `t0`.
    async fn admitted(shaper: &Shaper, search: bool, t0: Instant) -> (Admit, Duration) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let admit = shaper.admit(search, deadline, |_| {}).await;
        (admit, t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_over_the_budget_queue_for_the_window_to_roll() {
        let shaper = shaper(3, 15_000);
        let t0 = Instant::now();
        let answers =
            futures_util::future::join_all((0..7).map(|_| admitted(&shaper, false, t0))).await;
        let go = |rolls: u32| {
            (
                Admit::Go {
                    queued: TEN_SECONDS * rolls,
                },
                TEN_SECONDS * rolls,
            )
        };
        assert_eq!(
            answers,
            [
                go(0),
                go(0),
                go(0),
                go(1),
                go(1),
                go(1),
                (
                    Admit::Refused {
                        retry_after: TEN_SECONDS * 2
                    },
                    Duration::ZERO
                )
            ],
            "the 7th would wait 20 s, past max_queue_wait_ms = 15 s: refused at once"
        );
        assert!(Shaper::new(
            "off",
            &RateLimitSettings::from(&crate::config::RateLimitConfig {
                per_ten_seconds: Some(0),
                ..Default::default()
            }),
            None
        )
        .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_while_queued_gives_its_slot_to_the_next() {
        let shaper = shaper(1, 30_000);
        let t0 = Instant::now();
        assert_eq!(admitted(&shaper, false, t0).await.1, Duration::ZERO);
        // The second request waits for t0 + 10 s; its client leaves after 4 s.
        let gone = tokio::time::timeout(Duration::from_secs(4), admitted(&shaper, false, t0)).await;
        assert!(gone.is_err());
        let (admit, at) = admitted(&shaper, false, t0).await;
        assert_eq!(at, TEN_SECONDS, "the freed slot, not the one after it");
        assert_eq!(
            admit,
            Admit::Go {
                queued: TEN_SECONDS - Duration::from_secs(4)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn searches_wait_for_their_own_second() {
        let shaper = shaper(100, 15_000);
        let t0 = Instant::now();
        let answers =
            futures_util::future::join_all((0..5).map(|_| admitted(&shaper, true, t0))).await;
        let at: Vec<_> = answers.iter().map(|(_, at)| *at).collect();
        let z = Duration::ZERO;
        assert_eq!(at, [z, z, ONE_SECOND, ONE_SECOND, ONE_SECOND * 2]);
        // Other requests are not held back by the search window.
        assert_eq!(admitted(&shaper, false, t0).await.1, ONE_SECOND * 2);
    }
}
