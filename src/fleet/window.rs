//! Fleet-wide admission: the exact rolling window of src/ratelimit.rs, kept in Redis and
//! decided by one Lua script per request (one round trip), on the Redis server's clock.
//!
//! Each window is a sorted set of planned send times (ms). A request may go at
//! `max(now, n-th latest planned send + window)`, the same rule as the local limiter, so no
//! window of that length ever holds more than `n` planned sends, whatever the order in which
//! replicas arrive. A send time past the caller's bound is refused without reserving anything.
//! The answer is a wait relative to Redis's `now`, so replica clocks never enter into it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use redis::{Script, ScriptInvocation};

use super::connection::{FleetError, Redis};
use super::keys::AccountKeys;
use crate::ratelimit::{Admission, ONE_SECOND, TEN_SECONDS};

/// A script on the Redis server's clock (`now`, ms) that reads the window from ARGV 1-4:
/// configured limit, window ms, search limit, search window ms (`Inner::window_args`).
macro_rules! window_script {
    ($body:literal) => {
        concat!(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local configured = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local search_limit = tonumber(ARGV[3])
local search_span = tonumber(ARGV[4])
"#,
            $body
        )
    };
}

/// KEYS: window, search, limit. ARGV: the window (search limit 0: not a search request),
/// longest wait ms, reservation id, the limit to use when none is stored (this replica's view
/// of the budget).
/// Returns `{1, wait_ms, in_use, limit}` when a slot was reserved, `{0, retry_after_ms, in_use,
/// limit}` when refused; `in_use` counts the slots taken in the window (sent or planned).
const ADMIT_LUA: &str = window_script!(
    r#"local max_wait = tonumber(ARGV[5])
local id = ARGV[6]
local assumed = tonumber(ARGV[7])

-- Adaptive shaping moves the budget fleet-wide; never above what is configured. Without a
-- stored figure (it lapsed, or Redis restarted empty) the caller's own view stands in.
local limit = tonumber(redis.call('HGET', KEYS[3], 'general')) or assumed
limit = math.max(1, math.min(limit, configured))

-- The earliest time at or after `earliest` keeping `key` within `n` per `width`.
local function next_slot(key, n, width, earliest)
  local nth = redis.call('ZREVRANGE', key, n - 1, n - 1, 'WITHSCORES')
  if nth[2] then
    return math.max(earliest, tonumber(nth[2]) + width)
  end
  return earliest
end

local at = now
if search_limit > 0 then at = next_slot(KEYS[2], search_limit, search_span, at) end
at = next_slot(KEYS[1], limit, span, at)
if at - now > max_wait then
  return {0, at - now, redis.call('ZCOUNT', KEYS[1], now - span + 1, '+inf'), limit}
end

-- Sends that left the window can never be the n-th latest again, nor can more than the
-- configured limit of the latest: memory per account stays bounded.
local function record(key, keep, width)
  redis.call('ZADD', key, at, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - width)
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  redis.call('PEXPIRE', key, at - now + width + 1000)
end
if search_limit > 0 then record(KEYS[2], search_limit, search_span) end
record(KEYS[1], configured, span)
return {1, at - now, redis.call('ZCARD', KEYS[1]), limit}
"#
);

/// KEYS: window, search. ARGV: the window, then (id, ms before now (negative: planned),
/// search 0/1) per send. Puts this replica's recent sends back into a window
/// that lost them (Redis restarted empty) or never saw them (sent in fallback). `NX`: a send
/// Redis still holds keeps its own time.
const SEED_LUA: &str = window_script!(
    r#"local function trim(key, keep, width)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - width)
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  redis.call('PEXPIRE', key, width + 1000)
end
local searched = false
for i = 5, #ARGV, 3 do
  local at = now - tonumber(ARGV[i + 1])
  redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i])
  if ARGV[i + 2] == '1' and search_limit > 0 then
    redis.call('ZADD', KEYS[2], 'NX', at, ARGV[i])
    searched = true
  end
end
trim(KEYS[1], configured, span)
if searched then trim(KEYS[2], search_limit, search_span) end
return 1
"#
);

/// KEYS: window, search. ARGV: window ms. Returns `{sends in the last window, effective limit}`.
const USAGE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf')
local limit = tonumber(redis.call('HGET', KEYS[2], 'general')) or -1
return {used, limit}
"#;

/// How long a lowered fleet-wide budget stands without being set again.
const LIMIT_TTL: Duration = Duration::from_secs(600);

/// One reservation, so a request whose client left can give its slot back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    id: String,
    search: bool,
}

impl Ticket {
    /// A send this replica decided on its own (fallback), so it can be seeded into Redis later.
    pub(crate) fn local(search: bool) -> Ticket {
        Ticket {
            id: reservation_id(),
            search,
        }
    }

    pub(crate) fn search(&self) -> bool {
        self.search
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowAdmission {
    /// The same shape the local limiter answers with.
    pub admission: Admission,
    /// Present when a slot was reserved.
    pub ticket: Option<Ticket>,
    /// The shared budget in use as the script saw it: slots taken in the window, and the limit.
    pub(crate) usage: WindowUsage,
}

/// The shared budget in use, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// Sends planned within the last window, fleet-wide.
    pub used: u64,
    /// The fleet-wide budget now (adaptive shaping may have lowered it).
    pub limit: u32,
}

/// An account's fleet-wide window; built once per account at startup, cheap to clone.
#[derive(Clone)]
pub struct SharedWindow {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    keys: AccountKeys,
    per_ten_seconds: u32,
    search_per_second: u32,
    /// The budget to use while Redis stores none: this replica's view (adaptive shaping).
    assumed: AtomicU32,
    admit: Script,
    usage: Script,
    seed: Script,
}

impl Inner {
    /// ARGV 1-4 of the admit and seed scripts (`window_script!`).
    fn window_args(&self, invocation: &mut ScriptInvocation<'_>, search_limit: u32) {
        invocation
            .arg(self.per_ten_seconds)
            .arg(millis(TEN_SECONDS))
            .arg(search_limit)
            .arg(millis(ONE_SECOND));
    }
}

impl SharedWindow {
    /// `per_ten_seconds` must be > 0 (0 means no shaping, and no window at all).
    pub fn new(
        redis: Redis,
        keys: AccountKeys,
        per_ten_seconds: u32,
        search_per_second: u32,
    ) -> SharedWindow {
        SharedWindow {
            inner: Arc::new(Inner {
                redis,
                keys,
                per_ten_seconds,
                search_per_second,
                assumed: AtomicU32::new(per_ten_seconds),
                admit: Script::new(ADMIT_LUA),
                usage: Script::new(USAGE_LUA),
                seed: Script::new(SEED_LUA),
            }),
        }
    }

    /// Reserves a send slot fleet-wide, waiting at most `max_wait` (already bounded by the
    /// request's deadline). One EVALSHA; an error means "fall back", never "fail the request".
    pub async fn admit(
        &self,
        search: bool,
        max_wait: Duration,
    ) -> Result<WindowAdmission, FleetError> {
        let inner = &self.inner;
        let search_limit = if search { inner.search_per_second } else { 0 };
        let id = reservation_id();
        let mut invocation = inner.admit.prepare_invoke();
        invocation
            .key(&inner.keys.window)
            .key(&inner.keys.search)
            .key(&inner.keys.limit);
        inner.window_args(&mut invocation, search_limit);
        invocation
            .arg(millis(max_wait))
            .arg(&id)
            .arg(inner.assumed.load(Ordering::Relaxed));
        let (reserved, wait_ms, in_use, limit): (u8, u64, u64, u32) = inner
            .redis
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        // The wait is relative to Redis's clock at the script; counting it from the answer's
        // arrival errs on the late side by half a round trip.
        let wait = Duration::from_millis(wait_ms);
        let usage = WindowUsage {
            used: in_use,
            limit,
        };
        Ok(match reserved {
            1 => WindowAdmission {
                admission: Admission::SendAt(Instant::now() + wait),
                ticket: Some(Ticket {
                    id,
                    search: search_limit > 0,
                }),
                usage,
            },
            _ => WindowAdmission {
                admission: Admission::Refused { retry_after: wait },
                ticket: None,
                usage,
            },
        })
    }

    /// The budget the script uses while Redis stores no fleet-wide figure (clamped to
    /// 1..=configured). Local and free: call it whenever this replica's view changes.
    pub(crate) fn assume_limit(&self, limit: u32) {
        let limit = limit.clamp(1, self.inner.per_ten_seconds);
        self.inner.assumed.store(limit, Ordering::Relaxed);
    }

    /// Puts this replica's sends of the last window (ticket, ms before now; negative for a
    /// send still planned) into the shared
    /// window, once after an outage: a Redis that restarted empty, or never saw the sends this
    /// replica made alone, would otherwise admit a second full budget into the same window.
    pub(crate) async fn seed(&self, sends: &[(Ticket, i64)]) -> Result<(), FleetError> {
        if sends.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let mut invocation = inner.seed.prepare_invoke();
        invocation.key(&inner.keys.window).key(&inner.keys.search);
        inner.window_args(&mut invocation, inner.search_per_second);
        for (ticket, age) in sends {
            invocation
                .arg(&ticket.id)
                .arg(*age)
                .arg(u8::from(ticket.search));
        }
        inner
            .redis
            .call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// Gives a reserved slot back (the client left before its send time).
    pub async fn release(&self, ticket: Ticket) -> Result<(), FleetError> {
        let keys = &self.inner.keys;
        let (window, search) = (keys.window.clone(), keys.search.clone());
        self.inner
            .redis
            .call(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.zrem(&window, &ticket.id).ignore();
                if ticket.search {
                    pipe.zrem(&search, &ticket.id).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Sets the fleet-wide budget (adaptive shaping), clamped to 1..=configured. It lapses
    /// after 10 minutes unless set again, so a stale lowering cannot outlive its cause.
    pub async fn set_limit(&self, limit: u32) -> Result<(), FleetError> {
        let limit = limit.clamp(1, self.inner.per_ten_seconds);
        let key = self.inner.keys.limit.clone();
        self.inner
            .redis
            .call(|mut c| async move {
                redis::pipe()
                    .hset(&key, "general", limit)
                    .ignore()
                    .pexpire(&key, millis(LIMIT_TTL) as i64)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    pub async fn usage(&self) -> Result<WindowUsage, FleetError> {
        let inner = &self.inner;
        let mut invocation = inner.usage.prepare_invoke();
        invocation
            .key(&inner.keys.window)
            .key(&inner.keys.limit)
            .arg(millis(TEN_SECONDS));
        let (used, limit): (u64, i64) = inner
            .redis
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(WindowUsage {
            used,
            limit: effective_limit(limit, inner.per_ten_seconds),
        })
    }
}

/// What the script does with the stored limit, for `/status`: absent (-1) means configured.
fn effective_limit(stored: i64, configured: u32) -> u32 {
    if stored < 0 {
        configured
    } else {
        (stored as u32).clamp(1, configured)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Unique across replicas: 128 random bits.
fn reservation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_limit_is_clamped_like_the_script_does() {
        assert_eq!(effective_limit(-1, 100), 100);
        assert_eq!(effective_limit(40, 100), 40);
        assert_eq!(effective_limit(0, 100), 1);
        assert_eq!(effective_limit(500, 100), 100);
    }

    #[test]
    fn reservation_ids_differ() {
        assert_ne!(reservation_id(), reservation_id());
        assert_eq!(reservation_id().len(), 32);
    }
}
