//! Replica heartbeats: each replica keeps its id in one sorted set, scored with the moment its
//! heartbeat lapses (Redis clock); the live count N sizes the local fallback share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::connection::{FleetError, Redis};

pub(crate) const INTERVAL: Duration = Duration::from_secs(2);
/// Three missed beats and a replica no longer counts.
pub(crate) const TTL: Duration = Duration::from_secs(6);

/// KEYS: replicas. ARGV: id, ttl ms. Beats, drops lapsed replicas, returns the live count.
const BEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 3)
return redis.call('ZCARD', KEYS[1])
"#;

/// While Redis is away, each replica shapes to this share of the account's budget: 10 % is
/// kept back because N is only as fresh as the last heartbeat seen.
pub(crate) fn fallback_share(per_ten_seconds: u32, replicas: usize) -> u32 {
    let n = replicas.max(1) as u64;
    ((per_ten_seconds as u64 * 9) / (10 * n)).max(1) as u32
}

pub(crate) struct Heartbeat {
    redis: Redis,
    key: String,
    id: String,
    script: Script,
    replicas: Arc<AtomicUsize>,
}

impl Heartbeat {
    pub(crate) fn new(
        redis: Redis,
        key: String,
        id: String,
        replicas: Arc<AtomicUsize>,
    ) -> Heartbeat {
        Heartbeat {
            redis,
            key,
            id,
            script: Script::new(BEAT_LUA),
            replicas,
        }
    }

    /// One beat; the count seen is kept (and stays at its last value while Redis is away).
    pub(crate) async fn beat(&self) -> Result<usize, FleetError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(&self.id)
            .arg(TTL.as_millis() as u64);
        let count: usize = self
            .redis
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        self.replicas.store(count.max(1), Ordering::Relaxed);
        self.redis.metrics().replicas.set(count as i64);
        Ok(count)
    }

    /// Beats every `INTERVAL` until dropped. The beat doubles as the probe that brings the
    /// replica back to shared mode once Redis returns, even with no traffic.
    pub(crate) async fn run_shared(&self) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.beat().await;
        }
    }

    /// Leaves the fleet at shutdown, so the others' share grows at once.
    pub(crate) async fn leave(&self) -> Result<(), FleetError> {
        let (key, id) = (self.key.clone(), self.id.clone());
        self.redis
            .call(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&id)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_share_is_ninety_percent_split_by_replicas() {
        assert_eq!(fallback_share(100, 1), 90);
        assert_eq!(fallback_share(100, 3), 30);
        assert_eq!(fallback_share(190, 4), 42);
        assert_eq!(fallback_share(100, 0), 90, "no heartbeat seen yet: alone");
        assert_eq!(fallback_share(5, 10), 1, "never zero");
    }
}
