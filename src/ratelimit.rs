//! Per-account request shaping under HubSpot's limits: an exact rolling window (N per 10 s, and
//! 5 per second for search), with send times handed out in arrival order and a bounded wait.
//!
//! A token bucket or GCRA with a burst of N lets nearly 2N requests into one rolling window,
//! which HubSpot would answer with 429s; keeping every planned send time and placing a new one
//! where no span of the window would hold more than N cannot.
//!
//! The API is shaped for a shared backend (fleet mode, one Redis script per call): `reserve`
//! answers a send time or a refusal, and `release` gives back a send time that was never used.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The windows are a little longer than HubSpot's. A slot is planned at an instant, but the
/// request reaches HubSpot some milliseconds later, by a varying amount; with exact windows the
/// previous batch can still be inside HubSpot's window when the next arrives. 2.5 % costs that
/// much throughput and keeps 250 ms of slack on the 10 s window (100 ms on the search window).
pub const TEN_SECONDS: Duration = Duration::from_millis(10_250);
pub(crate) const ONE_SECOND: Duration = Duration::from_millis(1_100);

/// The 10-second budget when the config sets none: HubSpot's smallest tier (Free/Starter).
/// HubSpot's `X-HubSpot-RateLimit-Max` then moves it to the app's real tier.
pub(crate) const DEFAULT_TEN_SECOND_BUDGET: usize = 100;
/// The most a followed budget may rise to: above HubSpot's largest tier (250 with the add-on),
/// so a garbled header cannot make the proxy shape to nothing.
pub(crate) const FOLLOW_CAP: usize = 1_000;

/// Where the 10-second budget comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Set in the config: HubSpot's figure may lower it, and raise it back, never above this.
    Ceiling(usize),
    /// Not set: start at 100 and follow HubSpot's figure up or down.
    Follow,
}

/// One rolling window: at most `limit` sends in any `span`.
struct Window {
    span: Duration,
    /// The most `limit` may be; HubSpot's reports move it between 1 and this.
    ceiling: usize,
    limit: AtomicUsize,
    /// Send times handed out and not released, in time order. Times a span or more in the past
    /// are pruned; the wait bound keeps the rest few (limit × wait / span).
    reserved: Mutex<VecDeque<Instant>>,
}

impl Window {
    fn new(limit: usize, ceiling: usize, span: Duration) -> Window {
        Window {
            span,
            ceiling,
            limit: AtomicUsize::new(limit.min(ceiling)),
            reserved: Mutex::new(VecDeque::with_capacity(limit)),
        }
    }

    /// The earliest send time not before `earliest` at which no span of the window would hold
    /// more than `limit` sends. With `limit` sorted times s, a time T is refused exactly when it
    /// lies strictly inside (s[j+limit-1] - span, s[j] + span) for some j; both ends grow with j,
    /// so one pass pushing T past each such interval finds the answer. Released times leave
    /// holes, which this fills.
    fn next_slot(&self, reserved: &VecDeque<Instant>, earliest: Instant) -> Instant {
        let limit = self.limit.load(Ordering::Relaxed).max(1);
        let mut at = earliest;
        if reserved.len() < limit {
            return at;
        }
        // Intervals whose right end is at or before `earliest` cannot hold it.
        let first = reserved.partition_point(|s| *s + self.span <= earliest);
        for j in first..=(reserved.len() - limit) {
            let (low, high) = (reserved[j + limit - 1], reserved[j] + self.span);
            if low >= at + self.span {
                break;
            }
            if at < high {
                at = high;
            }
        }
        at
    }

    fn prune(&self, reserved: &mut VecDeque<Instant>, now: Instant) {
        while reserved.front().is_some_and(|s| *s + self.span <= now) {
            reserved.pop_front();
        }
    }

    fn commit(&self, reserved: &mut VecDeque<Instant>, at: Instant) {
        let index = reserved.partition_point(|s| *s <= at);
        reserved.insert(index, at);
    }

    fn release(&self, at: Instant) {
        let mut reserved = self.reserved.lock().expect("limiter lock");
        if let Some(index) = reserved.iter().rposition(|s| *s == at) {
            reserved.remove(index);
        }
    }
}

/// What the limiter decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send at this instant (now, or after queueing). Give it back with `release` if unused.
    SendAt(Instant),
    /// The wait would pass the bound: answer 429 and suggest retrying after this long.
    Refused { retry_after: Duration },
}

pub(crate) struct Limiter {
    general: Window,
    search: Option<Window>,
    max_wait: Duration,
}

impl Limiter {
    pub(crate) fn new(budget: Budget, search_per_second: u32, max_wait: Duration) -> Limiter {
        let (start, ceiling) = match budget {
            Budget::Ceiling(n) => (n, n),
            Budget::Follow => (DEFAULT_TEN_SECOND_BUDGET, FOLLOW_CAP),
        };
        let search = search_per_second as usize;
        Limiter {
            general: Window::new(start, ceiling, TEN_SECONDS),
            search: (search > 0).then(|| Window::new(search, search, ONE_SECOND)),
            max_wait,
        }
    }

    /// Reserves a send time, in arrival order. Nothing is reserved when the answer is `Refused`.
    pub(crate) fn reserve(&self, search: bool, now: Instant, deadline: Instant) -> Admission {
        let search_window = self.search.as_ref().filter(|_| search);
        // Lock order is always search, then general.
        let mut search_slots = search_window.map(|w| w.reserved.lock().expect("limiter lock"));
        let mut general_slots = self.general.reserved.lock().expect("limiter lock");
        if let (Some(w), Some(slots)) = (search_window, search_slots.as_deref_mut()) {
            w.prune(slots, now);
        }
        self.general.prune(&mut general_slots, now);
        // A time free in one window may be taken in the other: alternate until both agree.
        let mut at = now;
        loop {
            let in_search = match (search_window, search_slots.as_deref()) {
                (Some(w), Some(slots)) => w.next_slot(slots, at),
                _ => at,
            };
            let in_both = self.general.next_slot(&general_slots, in_search);
            if in_both == at {
                break;
            }
            at = in_both;
        }
        let bound = (now + self.max_wait).min(deadline);
        if at > bound {
            return Admission::Refused {
                retry_after: at.saturating_duration_since(now),
            };
        }
        if let (Some(w), Some(slots)) = (search_window, search_slots.as_deref_mut()) {
            w.commit(slots, at);
        }
        self.general.commit(&mut general_slots, at);
        Admission::SendAt(at)
    }

    /// Gives back a send time whose request was never sent (its client left while it waited),
    /// so later arrivals can have it.
    pub(crate) fn release(&self, search: bool, at: Instant) {
        if let Some(w) = self.search.as_ref().filter(|_| search) {
            w.release(at);
        }
        self.general.release(at);
    }

    /// Records a send time decided elsewhere (the fleet's shared window), without checking it:
    /// should Redis go away, this replica's share then counts what it has just sent.
    pub(crate) fn note(&self, search: bool, now: Instant, at: Instant) {
        if let Some(w) = self.search.as_ref().filter(|_| search) {
            let mut slots = w.reserved.lock().expect("limiter lock");
            w.prune(&mut slots, now);
            w.commit(&mut slots, at);
        }
        let mut slots = self.general.reserved.lock().expect("limiter lock");
        self.general.prune(&mut slots, now);
        self.general.commit(&mut slots, at);
    }

    /// Sets the per-second search budget, within its configured figure (the fleet's fallback
    /// share). No effect when the search limit is off.
    pub(crate) fn set_search_limit(&self, limit: usize) {
        if let Some(w) = &self.search {
            w.limit.store(limit.clamp(1, w.ceiling), Ordering::Relaxed);
        }
    }

    /// HubSpot's `X-HubSpot-RateLimit-Max`, from an answer to a request that carried the
    /// account's bearer: shape to it from now on, within the ceiling. Returns the previous
    /// budget when it changed.
    pub(crate) fn follow_reported(&self, max: usize) -> Option<usize> {
        let target = max.clamp(1, self.general.ceiling);
        let previous = self.general.limit.swap(target, Ordering::Relaxed);
        (previous != target).then_some(previous)
    }

    /// The 10-second budget shaped to now.
    pub(crate) fn limit(&self) -> usize {
        self.general.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

/// HubSpot's search endpoints (`POST /crm/v3/objects/{type}/search` and the like) have their own limit.
pub(crate) fn is_search(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && path.trim_end_matches('/').ends_with("/search")
}

/// A send time held while its request waits for it. Dropped before `sent`, as when the client
/// disconnects and its handler is dropped mid-wait, it releases the time.
pub(crate) struct Held<'a> {
    limiter: &'a Limiter,
    search: bool,
    at: Instant,
    used: bool,
}

impl<'a> Held<'a> {
    pub(crate) fn new(limiter: &'a Limiter, search: bool, at: Instant) -> Held<'a> {
        Held {
            limiter,
            search,
            at,
            used: false,
        }
    }

    /// Waits for the send time; from then on the time is spent, whatever becomes of the request.
    pub(crate) async fn wait(mut self) {
        tokio::time::sleep_until(self.at).await;
        self.used = true;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.limiter.release(self.search, self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(admission: Admission) -> Instant {
        match admission {
            Admission::SendAt(t) => t,
            Admission::Refused { .. } => panic!("refused"),
        }
    }

    fn limiter(n: usize, search: u32, wait_secs: u64) -> Limiter {
        Limiter::new(Budget::Ceiling(n), search, Duration::from_secs(wait_secs))
    }

    #[test]
    fn a_burst_fills_the_window_then_waits_for_it_to_roll() {
        let limiter = limiter(3, 0, 60);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..3 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        }
        // The 4th goes when the 1st leaves the window; the 7th when the 4th does.
        for _ in 0..3 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        }
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + 2 * TEN_SECONDS);
        // Never more than 3 in any 10 s: later arrivals after a quiet spell go at once.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(at(limiter.reserve(false, later, far)), later);
    }

    #[test]
    fn the_wait_bound_refuses_without_reserving() {
        let limiter = self::limiter(2, 0, 5);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        limiter.reserve(false, t0, far);
        limiter.reserve(false, t0, far);
        assert_eq!(
            limiter.reserve(false, t0, far),
            Admission::Refused {
                retry_after: TEN_SECONDS
            }
        );
        // The refusal took no slot: at t0+10 s one request goes at once.
        let t10 = t0 + TEN_SECONDS;
        assert_eq!(at(limiter.reserve(false, t10, far)), t10);
        // A tighter request deadline also bounds the wait.
        let limiter = self::limiter(1, 0, 60);
        limiter.reserve(false, t0, far);
        assert!(matches!(
            limiter.reserve(false, t0, t0 + Duration::from_secs(3)),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn search_has_its_own_per_second_window_and_counts_in_the_general_one() {
        let limiter = self::limiter(100, 2, 60);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        assert_eq!(at(limiter.reserve(true, t0, far)), t0);
        assert_eq!(at(limiter.reserve(true, t0, far)), t0);
        assert_eq!(at(limiter.reserve(true, t0, far)), t0 + ONE_SECOND);
        assert_eq!(
            at(limiter.reserve(false, t0, far)),
            t0,
            "non-search traffic is not held back"
        );
        let limiter = self::limiter(3, 5, 60);
        for _ in 0..3 {
            limiter.reserve(true, t0, far);
        }
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        assert!(is_search(
            &http::Method::POST,
            "/crm/v3/objects/contacts/search"
        ));
        assert!(!is_search(
            &http::Method::GET,
            "/crm/v3/objects/contacts/search"
        ));
    }

    #[test]
    fn a_configured_budget_is_a_ceiling_hubspot_moves_under() {
        let limiter = self::limiter(190, 0, 60);
        assert_eq!(limiter.follow_reported(100), Some(190));
        assert_eq!(limiter.limit(), 100);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..100 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        }
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        // HubSpot reports more again: back up, but never past the configured 190.
        assert_eq!(limiter.follow_reported(150), Some(100));
        assert_eq!(limiter.limit(), 150);
        assert_eq!(limiter.follow_reported(250), Some(150));
        assert_eq!(limiter.limit(), 190);
        assert_eq!(limiter.follow_reported(250), None);
    }

    #[test]
    fn an_unset_budget_starts_at_100_and_follows_hubspot_both_ways() {
        let limiter = Limiter::new(Budget::Follow, 0, Duration::from_secs(1));
        assert_eq!(limiter.general.ceiling, FOLLOW_CAP);
        assert_eq!(limiter.limit(), 100);
        limiter.follow_reported(190);
        assert_eq!(limiter.limit(), 190);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..190 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        }
        assert!(matches!(
            limiter.reserve(false, t0, far),
            Admission::Refused { .. }
        ));
        limiter.follow_reported(110);
        assert_eq!(limiter.limit(), 110);
        limiter.follow_reported(0);
        assert_eq!(limiter.limit(), 1, "never shaped to nothing");
        limiter.follow_reported(1_000_000);
        assert_eq!(limiter.limit(), FOLLOW_CAP);
    }

    #[test]
    fn a_released_time_goes_to_the_next_arrival() {
        let limiter = self::limiter(2, 0, 60);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        limiter.reserve(false, t0, far);
        limiter.reserve(false, t0, far);
        let third = at(limiter.reserve(false, t0, far));
        let fourth = at(limiter.reserve(false, t0, far));
        assert_eq!((third, fourth), (t0 + TEN_SECONDS, t0 + TEN_SECONDS));
        // The client of the 4th left: the next arrival takes its time, not t0 + 20 s.
        limiter.release(false, fourth);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(at(limiter.reserve(false, t1, far)), t0 + TEN_SECONDS);
        assert_eq!(at(limiter.reserve(false, t1, far)), t0 + 2 * TEN_SECONDS);
        // Releasing an early time fills the hole without breaking the window for later ones.
        let limiter = self::limiter(2, 0, 60);
        let a = at(limiter.reserve(false, t0, far));
        limiter.reserve(false, t0, far);
        limiter.reserve(false, t0, far);
        limiter.release(false, a);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + 2 * TEN_SECONDS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_dropped_before_its_time_releases_it() {
        let limiter = self::limiter(1, 0, 30);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        at(limiter.reserve(false, t0, far));
        let queued = at(limiter.reserve(false, t0, far));
        assert_eq!(queued, t0 + TEN_SECONDS);
        // The client leaves after 3 s of waiting: its handler, and with it the wait, is dropped.
        let wait = Held::new(&limiter, false, queued).wait();
        assert!(tokio::time::timeout(Duration::from_secs(3), wait)
            .await
            .is_err());
        let now = Instant::now();
        assert_eq!(at(limiter.reserve(false, now, far)), t0 + TEN_SECONDS);
        // A wait that reached its time keeps it.
        let limiter = self::limiter(1, 0, 30);
        let first = at(limiter.reserve(false, now, far));
        Held::new(&limiter, false, first).wait().await;
        assert_eq!(
            at(limiter.reserve(false, now, far)),
            first + TEN_SECONDS,
            "a sent request's time is spent"
        );
    }

    /// Sends like a client would: reserve, wait the time out, send; returns the send instants.
    async fn send_in_turn(limiter: &Limiter, search: bool, n: usize) -> Vec<Instant> {
        let mut sent = Vec::with_capacity(n);
        for _ in 0..n {
            let now = Instant::now();
            let at = at(limiter.reserve(search, now, now + Duration::from_secs(600)));
            Held::new(limiter, search, at).wait().await;
            sent.push(Instant::now());
        }
        sent
    }

    /// Whether any `window` of time holds more than `limit` of the sends.
    fn most_in_any(sent: &[Instant], window: Duration) -> usize {
        sent.iter()
            .map(|&start| {
                sent.iter()
                    .filter(|&&t| t >= start && t < start + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn the_rolling_window_paces_a_long_run_under_the_paused_clock() {
        let limiter = self::limiter(10, 0, 60);
        let t0 = Instant::now();
        let sent = send_in_turn(&limiter, false, 35).await;
        // 10 at once, then 10 when the window rolls, and so on: the 35th goes at 30 s.
        assert_eq!(sent[9], t0);
        assert_eq!(sent[10], t0 + TEN_SECONDS);
        assert_eq!(sent[34], t0 + 3 * TEN_SECONDS);
        assert_eq!(most_in_any(&sent, TEN_SECONDS), 10);
        // A quiet spell longer than the window: the next burst goes at once again.
        tokio::time::advance(Duration::from_secs(25)).await;
        let later = Instant::now();
        let burst = send_in_turn(&limiter, false, 10).await;
        assert!(burst.iter().all(|&t| t == later), "{burst:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn searches_are_paced_per_second_inside_the_ten_second_window() {
        let limiter = self::limiter(12, 5, 60);
        let t0 = Instant::now();
        let sent = send_in_turn(&limiter, true, 12).await;
        assert_eq!(most_in_any(&sent, ONE_SECOND), 5);
        assert_eq!(sent[4], t0);
        assert_eq!(sent[5], t0 + ONE_SECOND);
        assert_eq!(sent[11], t0 + 2 * ONE_SECOND);
        // The 10-second budget is spent too: a plain request now waits for it to roll.
        let plain = send_in_turn(&limiter, false, 1).await;
        assert_eq!(plain[0], t0 + TEN_SECONDS);
    }
}
