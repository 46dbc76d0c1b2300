//! Fleet admission: the account's window kept in Redis (one script per admitted request), and
//! this replica's local share (`budget × 0.9 / N`) whenever Redis errs or passes `timeout_ms`.
//! Redis trouble never fails a request: it only changes who decides.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Admit;
use crate::fleet::{Fleet, SharedWindow, Ticket, WindowUsage};
use crate::ratelimit::{
    Admission, Budget, Limiter, DEFAULT_TEN_SECOND_BUDGET, FOLLOW_CAP, TEN_SECONDS,
};

pub(crate) struct SharedShaper {
    fleet: Arc<Fleet>,
    window: SharedWindow,
    /// Decides while Redis is away, at this replica's share. It also notes every shared send,
    /// so on entering fallback it counts what this replica has just sent.
    fallback: Limiter,
    /// The 10-second budget as this replica knows it (HubSpot's figure, within `ceiling`).
    budget: AtomicU32,
    ceiling: u32,
    search_per_second: u32,
    /// This replica's sends within the last window, to put back into a Redis that lost them.
    recent: Arc<Mutex<VecDeque<(Instant, Ticket)>>>,
    /// Outages seen (`hubspot_proxy_fleet_fallbacks_total`) when Redis last had our sends.
    outages_seeded: AtomicU64,
    last_usage: Mutex<Option<(WindowUsage, SystemTime)>>,
}

/// The shared budget as `/status` shows it.
pub(crate) struct SharedStatus {
    /// Slots taken fleet-wide in the window at the last shared admission, and when that was.
    pub(crate) in_use: Option<(WindowUsage, SystemTime)>,
    /// This replica's budget while Redis is away.
    pub(crate) fallback_share: u32,
}

impl SharedShaper {
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        account: &str,
        budget: Budget,
        search_per_second: u32,
        max_wait: Duration,
    ) -> SharedShaper {
        // Unset budgets follow HubSpot up to FOLLOW_CAP; the window's configured limit is that
        // ceiling, and the followed figure is what it assumes until one is stored fleet-wide.
        let (start, ceiling) = match budget {
            Budget::Ceiling(n) => (n, n),
            Budget::Follow => (DEFAULT_TEN_SECOND_BUDGET, FOLLOW_CAP),
        };
        let (start, ceiling) = (start as u32, ceiling as u32);
        let window = fleet.window(account, ceiling, search_per_second);
        window.assume_limit(start);
        let outages = fleet.redis().metrics().fallbacks.get();
        SharedShaper {
            window,
            fallback: Limiter::new(
                Budget::Ceiling(ceiling as usize),
                search_per_second,
                max_wait,
            ),
            budget: AtomicU32::new(start),
            ceiling,
            search_per_second,
            recent: Arc::default(),
            outages_seeded: AtomicU64::new(outages),
            last_usage: Mutex::new(None),
            fleet,
        }
    }

    pub(crate) async fn admit(
        &self,
        search: bool,
        deadline: Instant,
        slotted: impl FnOnce(Duration),
    ) -> Admit {
        let now = Instant::now();
        let bound = (now + self.fallback.max_wait()).min(deadline);
        // While Redis is away the heartbeat probes it every 2 s; requests don't each pay
        // `timeout_ms` to learn it is still away.
        if self.fleet.is_up() {
            self.seed_after_outage(now).await;
            // An error falls through to the local share; the connection layer logged the
            // change to fallback, once.
            let answer = self
                .window
                .admit(search, bound.saturating_duration_since(now))
                .await;
            if let Ok(answer) = answer {
                *self.last_usage.lock().expect("usage lock") =
                    Some((answer.usage, SystemTime::now()));
                return match (answer.admission, answer.ticket) {
                    (Admission::SendAt(at), Some(ticket)) => {
                        self.hold(at, ticket, true, now, slotted).await
                    }
                    (Admission::Refused { retry_after }, _) => Admit::Refused { retry_after },
                    // The script reserves whenever it answers a send time.
                    (Admission::SendAt(at), None) => Admit::Refused {
                        retry_after: at.saturating_duration_since(now),
                    },
                };
            }
        }
        self.admit_locally(search, deadline, slotted).await
    }

    /// This replica alone, at its share of the budget.
    async fn admit_locally(
        &self,
        search: bool,
        deadline: Instant,
        slotted: impl FnOnce(Duration),
    ) -> Admit {
        let budget = self.budget.load(Ordering::Relaxed);
        self.fallback
            .follow_reported(self.fleet.fallback_share(budget) as usize);
        if self.search_per_second > 0 {
            self.fallback
                .set_search_limit(self.fleet.fallback_share(self.search_per_second) as usize);
        }
        let now = Instant::now();
        match self.fallback.reserve(search, now, deadline) {
            Admission::SendAt(at) => {
                self.hold(at, Ticket::local(search), false, now, slotted)
                    .await
            }
            Admission::Refused { retry_after } => Admit::Refused { retry_after },
        }
    }

    /// Waits for the slot at `at`; a request dropped first gives it back (see `Slot`).
    async fn hold(
        &self,
        at: Instant,
        ticket: Ticket,
        shared: bool,
        now: Instant,
        slotted: impl FnOnce(Duration),
    ) -> Admit {
        let search = ticket.search();
        slotted(at.saturating_duration_since(now));
        if shared {
            self.fallback.note(search, now, at);
        }
        self.remember(at, &ticket, now);
        let slot = Slot {
            shaper: self,
            at,
            ticket: Some(ticket),
            shared,
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
        slot.spend();
        Admit::Go {
            queued: at.saturating_duration_since(now),
        }
    }

    fn remember(&self, at: Instant, ticket: &Ticket, now: Instant) {
        let mut recent = self.recent.lock().expect("recent lock");
        while recent.front().is_some_and(|(t, _)| *t + TEN_SECONDS <= now) {
            recent.pop_front();
        }
        recent.push_back((at, ticket.clone()));
    }

    /// Once after each outage, before the first shared admission: this replica's sends of the
    /// last window go back into Redis (which may have restarted empty, and never saw the sends
    /// made in fallback), so the window does not admit a second budget on top of them.
    async fn seed_after_outage(&self, now: Instant) {
        let outages = self.fleet.redis().metrics().fallbacks.get();
        if self.outages_seeded.swap(outages, Ordering::Relaxed) == outages {
            return;
        }
        let sends: Vec<(Ticket, i64)> = self
            .recent
            .lock()
            .expect("recent lock")
            .iter()
            .filter(|(at, _)| *at + TEN_SECONDS > now)
            .map(|(at, ticket)| (ticket.clone(), offset_ms(now, *at)))
            .collect();
        if self.window.seed(&sends).await.is_err() {
            // Still away: try again after the next outage is counted (or now, next request).
            self.outages_seeded
                .store(outages.wrapping_sub(1), Ordering::Relaxed);
        }
    }

    /// Adaptive shaping, fleet-wide: a changed figure is stored in Redis for every replica
    /// (off the request path), and assumed here at once.
    pub(crate) fn follow_reported(&self, max: usize) -> Option<usize> {
        let target = max.clamp(1, self.ceiling as usize) as u32;
        let previous = self.budget.swap(target, Ordering::Relaxed);
        if previous == target {
            return None;
        }
        self.window.assume_limit(target);
        let window = self.window.clone();
        tokio::spawn(async move {
            let _ = window.set_limit(target).await;
        });
        Some(previous as usize)
    }

    pub(crate) fn limit(&self) -> usize {
        self.budget.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn status(&self) -> SharedStatus {
        SharedStatus {
            in_use: *self.last_usage.lock().expect("usage lock"),
            fallback_share: self
                .fleet
                .fallback_share(self.budget.load(Ordering::Relaxed)),
        }
    }
}

/// How long before `now` a send was (negative: it is still planned), in ms.
fn offset_ms(now: Instant, at: Instant) -> i64 {
    if at <= now {
        now.duration_since(at).as_millis() as i64
    } else {
        -(at.duration_since(now).as_millis() as i64)
    }
}

/// A slot held while its request waits. Dropped unspent (the client left), it is given back:
/// locally at once, in Redis by a spawned call, off the request path and best effort (a lost
/// release only leaves the slot unused; it still leaves the window in 10 s).
struct Slot<'a> {
    shaper: &'a SharedShaper,
    at: Instant,
    ticket: Option<Ticket>,
    shared: bool,
}

impl Slot<'_> {
    fn spend(mut self) {
        self.ticket = None;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        self.shaper.fallback.release(ticket.search(), self.at);
        self.shaper
            .recent
            .lock()
            .expect("recent lock")
            .retain(|(_, t)| *t != ticket);
        if self.shared {
            let window = self.shaper.window.clone();
            tokio::spawn(async move {
                let _ = window.release(ticket).await;
            });
        }
    }
}
