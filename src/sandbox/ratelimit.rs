//! The stand-in's rate limits: HubSpot's rolling 10-second window and per-second search limit,
//! reported in `X-HubSpot-RateLimit-*` headers and, when enforced, answered with 429.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

const WINDOW: Duration = Duration::from_secs(10);
const SEARCH_WINDOW: Duration = Duration::from_secs(1);
const DAILY: u64 = 250_000;

pub struct RateLimits {
    max: AtomicU64,
    search_max: AtomicU64,
    enforce: AtomicBool,
    recent: Mutex<VecDeque<Instant>>,
    recent_search: Mutex<VecDeque<Instant>>,
    daily_used: AtomicU64,
    rejected: AtomicU64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            max: AtomicU64::new(190),
            search_max: AtomicU64::new(5),
            enforce: AtomicBool::new(false),
            recent: Mutex::default(),
            recent_search: Mutex::default(),
            daily_used: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// What a request got from the limiter.
pub(crate) enum Admission {
    Allowed { remaining: u64 },
    Limited { policy: &'static str },
}

impl RateLimits {
    /// Sets the 10-second budget and whether going over it is answered with 429.
    pub fn configure(&self, per_ten_seconds: u64, search_per_second: u64, enforce: bool) {
        self.max.store(per_ten_seconds, Ordering::SeqCst);
        self.search_max.store(search_per_second, Ordering::SeqCst);
        self.enforce.store(enforce, Ordering::SeqCst);
    }

    /// How many requests HubSpot answered 429 so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::SeqCst)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }

    pub(super) fn admit(&self, search: bool) -> Admission {
        let now = Instant::now();
        let enforce = self.enforce.load(Ordering::SeqCst);
        if search {
            let max = self.search_max.load(Ordering::SeqCst);
            let mut recent = self.recent_search.lock().unwrap();
            if !slide(&mut recent, now, SEARCH_WINDOW, max, enforce) {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                return Admission::Limited { policy: "SECONDLY" };
            }
        }
        let max = self.max();
        let mut recent = self.recent.lock().unwrap();
        if !slide(&mut recent, now, WINDOW, max, enforce) {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return Admission::Limited {
                policy: "TEN_SECONDLY_ROLLING",
            };
        }
        self.daily_used.fetch_add(1, Ordering::SeqCst);
        Admission::Allowed {
            remaining: max.saturating_sub(recent.len() as u64),
        }
    }

    /// HubSpot sends the daily pair only for private apps and keys, not for OAuth tokens.
    pub(super) fn headers(&self, headers: &mut HeaderMap, remaining: u64, daily: bool) {
        headers.insert("x-hubspot-ratelimit-max", HeaderValue::from(self.max()));
        headers.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from(remaining),
        );
        headers.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from(WINDOW.as_millis() as u64),
        );
        if daily {
            let used = self.daily_used.load(Ordering::SeqCst);
            headers.insert("x-hubspot-ratelimit-daily", HeaderValue::from(DAILY));
            headers.insert(
                "x-hubspot-ratelimit-daily-remaining",
                HeaderValue::from(DAILY.saturating_sub(used)),
            );
        }
    }
}

/// Drops entries older than `window`, then admits one more if under `max` (or not enforcing).
fn slide(
    recent: &mut VecDeque<Instant>,
    now: Instant,
    window: Duration,
    max: u64,
    enforce: bool,
) -> bool {
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        recent.pop_front();
    }
    if enforce && recent.len() as u64 >= max {
        return false;
    }
    recent.push_back(now);
    true
}
