//! Per-account request shaping under HubSpot's limits: an exact rolling window (N per 10 s, and
//! 5 per second for search), with slots reserved in arrival order and a bounded queue wait.
//!
//! A token bucket or GCRA with a burst of N lets nearly 2N requests into one rolling window,
//! which HubSpot would answer with 429s; reserving "N-th previous reservation + window" cannot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The windows are a little longer than HubSpot's. A slot is planned at an instant, but the
/// request reaches HubSpot some milliseconds later, by a varying amount; with exact windows the
/// previous batch can still be inside HubSpot's window when the next arrives. 2.5 % costs that
/// much throughput and keeps 250 ms of slack on the 10 s window (100 ms on the search window).
pub const TEN_SECONDS: Duration = Duration::from_millis(10_250);
pub const ONE_SECOND: Duration = Duration::from_millis(1_100);

/// One rolling window: at most `limit` sends in any `span`.
struct Window {
    span: Duration,
    /// The configured budget; adaptive lowering never goes above it.
    configured: usize,
    limit: AtomicUsize,
    /// Send times already handed out, oldest first; never more than `configured` kept.
    reserved: Mutex<VecDeque<Instant>>,
}

impl Window {
    fn new(limit: usize, span: Duration) -> Window {
        Window {
            span,
            configured: limit,
            limit: AtomicUsize::new(limit),
            reserved: Mutex::new(VecDeque::with_capacity(limit)),
        }
    }

    /// The earliest send time not before `earliest` that keeps the window within its limit.
    fn next_slot(&self, reserved: &VecDeque<Instant>, earliest: Instant) -> Instant {
        let limit = self.limit.load(Ordering::Relaxed).max(1);
        match reserved.len().checked_sub(limit) {
            Some(i) => earliest.max(reserved[i] + self.span),
            None => earliest,
        }
    }

    fn commit(&self, reserved: &mut VecDeque<Instant>, at: Instant) {
        if reserved.len() == self.configured {
            reserved.pop_front();
        }
        reserved.push_back(at);
    }
}

/// What the limiter decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send at this instant (now, or after queueing).
    SendAt(Instant),
    /// The wait would pass the bound: answer 429 and suggest retrying after this long.
    Refused { retry_after: Duration },
}

pub struct Limiter {
    general: Window,
    search: Option<Window>,
    max_wait: Duration,
}

impl Limiter {
    /// `per_ten_seconds` must be > 0 (0 means "no limiter" and is handled by the caller).
    pub fn new(per_ten_seconds: u32, search_per_second: u32, max_wait: Duration) -> Limiter {
        Limiter {
            general: Window::new(per_ten_seconds as usize, TEN_SECONDS),
            search: (search_per_second > 0)
                .then(|| Window::new(search_per_second as usize, ONE_SECOND)),
            max_wait,
        }
    }

    /// Reserves a send slot, in arrival order. Nothing is reserved when the answer is `Refused`.
    pub fn reserve(&self, search: bool, now: Instant, deadline: Instant) -> Admission {
        let search_window = self.search.as_ref().filter(|_| search);
        // Lock order is always search, then general.
        let mut search_slots = search_window.map(|w| w.reserved.lock().expect("limiter lock"));
        let mut general_slots = self.general.reserved.lock().expect("limiter lock");
        let earliest = match (search_window, search_slots.as_deref()) {
            (Some(w), Some(slots)) => w.next_slot(slots, now),
            _ => now,
        };
        let at = self.general.next_slot(&general_slots, earliest);
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

    /// HubSpot's `X-HubSpot-RateLimit-Max` is lower than configured: shape to it from now on.
    /// Returns true when the budget changed.
    pub fn lower_to(&self, max: usize) -> bool {
        let target = max.clamp(1, self.general.configured);
        self.general.limit.fetch_min(target, Ordering::Relaxed) > target
    }

    pub fn limit(&self) -> usize {
        self.general.limit.load(Ordering::Relaxed)
    }
}

/// HubSpot's search endpoints (`POST /crm/v3/objects/{type}/search` and the like) have their own limit.
pub fn is_search(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && path.trim_end_matches('/').ends_with("/search")
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

    #[test]
    fn a_burst_fills_the_window_then_waits_for_it_to_roll() {
        let limiter = Limiter::new(3, 0, Duration::from_secs(60));
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..3 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        }
        // The 4th goes when the 1st leaves the window; the 6th when the 3rd does.
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + 2 * TEN_SECONDS);
        // Never more than 3 in any 10 s: later arrivals after a quiet spell go at once.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(at(limiter.reserve(false, later, far)), later);
    }

    #[test]
    fn the_wait_bound_refuses_without_reserving() {
        let limiter = Limiter::new(2, 0, Duration::from_secs(5));
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
        let limiter = Limiter::new(1, 0, Duration::from_secs(60));
        limiter.reserve(false, t0, far);
        assert!(matches!(
            limiter.reserve(false, t0, t0 + Duration::from_secs(3)),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn search_has_its_own_per_second_window_and_counts_in_the_general_one() {
        let limiter = Limiter::new(100, 2, Duration::from_secs(60));
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
        let limiter = Limiter::new(3, 5, Duration::from_secs(60));
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
    fn adaptive_lowering_only_goes_down() {
        let limiter = Limiter::new(190, 0, Duration::from_secs(60));
        assert!(limiter.lower_to(100));
        assert!(!limiter.lower_to(150));
        assert_eq!(limiter.limit(), 100);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..100 {
            assert_eq!(at(limiter.reserve(false, t0, far)), t0);
        }
        assert_eq!(at(limiter.reserve(false, t0, far)), t0 + TEN_SECONDS);
    }
}
