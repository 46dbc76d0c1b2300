//! The refresher's lease and the fence on token writes. One replica at a time holds an
//! account's lease (`SET NX PX`) and makes the token call; its write goes through only while
//! the lease is still its own and its generation is newer than the stored one, so a stalled
//! ex-leader whose lease lapsed during a slow token call cannot overwrite a newer token.

use std::time::Duration;

use redis::Script;

use super::connection::{FleetError, Redis};
use super::keys::AccountKeys;

/// KEYS: lease. ARGV: holder, ttl ms. 1 when renewed, 0 when the lease is no longer ours.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// KEYS: lease. ARGV: holder. Deletes the lease only if it is still ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: lease, token, generation. ARGV: holder, sealed record, record ttl ms, generation,
/// generation ttl ms, channel, notice. Returns the generation written, -1 when the lease is
/// not ours (any more), or -2 when a newer generation is already stored.
const FENCED_WRITE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
local gen = tonumber(ARGV[4])
if gen <= current then return -2 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], gen, 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return gen
"#;

/// The generation counter outlives any token, so generations keep rising across refreshes.
pub(crate) const GENERATION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longer than the token call may take (`token_timeout_secs`), with room for a retry and the
/// write, so the lease cannot lapse while its holder is still legitimately working.
pub(crate) fn lease_ttl(token_timeout: Duration) -> Duration {
    token_timeout * 2 + Duration::from_secs(5)
}

/// What a fenced write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedWrite {
    Written {
        generation: u64,
    },
    /// The lease lapsed or another replica holds it now: this write was refused.
    NotHolder,
    /// A generation at least as new is already stored: this write was refused.
    Stale,
}

/// A held lease. Dropping it without `release` lets it lapse at its TTL.
pub struct Lease {
    redis: Redis,
    keys: AccountKeys,
    holder: String,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.keys.lease)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Takes the lease if nobody holds it; `None` when another replica does.
    pub(crate) async fn acquire(
        redis: &Redis,
        keys: &AccountKeys,
        ttl: Duration,
    ) -> Result<Option<Lease>, FleetError> {
        let holder = format!("{:032x}", rand::random::<u128>());
        let (key, value, ms) = (keys.lease.clone(), holder.clone(), millis(ttl));
        let taken: Option<String> = redis
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(taken.map(|_| Lease {
            redis: redis.clone(),
            keys: keys.clone(),
            holder,
            ttl,
        }))
    }

    /// Extends the lease by its TTL from now; false when it is no longer ours.
    pub async fn renew(&self) -> Result<bool, FleetError> {
        let script = Script::new(RENEW_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.lease)
            .arg(&self.holder)
            .arg(millis(self.ttl));
        let renewed: i64 = self
            .redis
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(renewed == 1)
    }

    pub async fn release(self) -> Result<(), FleetError> {
        let script = Script::new(RELEASE_LUA);
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.keys.lease).arg(&self.holder);
        self.redis
            .call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// Writes `sealed` as the account's token record (for `record_ttl`) and announces
    /// `notice` on `channel`, only while this lease holds and `generation` is newer.
    pub(crate) async fn write_fenced(
        &self,
        sealed: &[u8],
        record_ttl: Duration,
        generation: u64,
        channel: &str,
        notice: &str,
    ) -> Result<FencedWrite, FleetError> {
        let script = Script::new(FENCED_WRITE_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.lease)
            .key(&self.keys.token)
            .key(&self.keys.generation)
            .arg(&self.holder)
            .arg(sealed)
            .arg(millis(record_ttl).max(1))
            .arg(generation)
            .arg(millis(GENERATION_TTL))
            .arg(channel)
            .arg(notice);
        let answer: i64 = self
            .redis
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(match answer {
            -1 => FencedWrite::NotHolder,
            -2 => FencedWrite::Stale,
            g => FencedWrite::Written {
                generation: g as u64,
            },
        })
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_outlives_a_token_call_with_a_retry() {
        for secs in [1, 10, 60] {
            let timeout = Duration::from_secs(secs);
            assert!(lease_ttl(timeout) > timeout * 2);
        }
    }
}
