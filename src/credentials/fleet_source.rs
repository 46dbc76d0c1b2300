//! Fleet mode's token source for an OAuth refresher: before calling the token endpoint it asks
//! the fleet. A newer token that is not yet due is adopted (no call); otherwise the replica that
//! wins the lease makes the one call and publishes under the fence, and the others wait for its
//! notice. Redis trouble means "refresh here, as a single process would".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::Secret;
use crate::fleet::tokens::POLL_INTERVAL;
use crate::fleet::{AccountTokens, FencedWrite, FleetError, Lease, SharedToken, TokenNotice};

/// What the refresher does about a due refresh.
pub(crate) enum Plan {
    /// The fleet holds a newer token that is not yet due: take it, make no token call.
    Adopt(SharedToken),
    /// This replica holds the lease: make the call, then publish as `generation`.
    Lead {
        lease: Box<Lease>,
        generation: u64,
        /// The refresh token the fleet last shared; it wins over this replica's file (which
        /// may hold one the fleet rotated away) unless an operator changed the file.
        fleet_refresh_token: Option<Secret<String>>,
    },
    /// Another replica held the lease for its whole TTL and nothing new arrived: try again soon.
    Retry,
    /// Redis is unreachable: refresh here, as a single process would.
    Local,
}

/// What became of a token this replica fetched under the lease.
pub(crate) enum Published {
    /// The fleet holds it now.
    Written,
    /// The fence refused it (the lease lapsed during the call, or a newer token is stored):
    /// the fleet's token, if a newer usable one is there, wins over ours.
    Lost(Option<SharedToken>),
    /// Redis failed during the write: keep ours locally.
    Unshared,
}

pub(crate) struct FleetSource {
    tokens: AccountTokens,
    notices: broadcast::Receiver<TokenNotice>,
    lease_ttl: Duration,
    /// The fleet generation of the token this replica holds or has moved past (adopted,
    /// published, or superseded by a local refresh). Compared for equality only: generations
    /// restart after a Redis restart without persistence.
    held: Option<u64>,
    /// Set while Redis is unreachable, so the fallback to local refreshes logs once.
    local: bool,
}

impl FleetSource {
    pub(crate) fn new(
        tokens: AccountTokens,
        notices: broadcast::Receiver<TokenNotice>,
        lease_ttl: Duration,
    ) -> Self {
        FleetSource {
            tokens,
            notices,
            lease_ttl,
            held: None,
            local: false,
        }
    }

    pub(crate) fn held(&self) -> Option<u64> {
        self.held
    }

    pub(crate) fn set_held(&mut self, generation: u64) {
        self.held = Some(generation);
    }

    fn is_new(&self, token: &SharedToken) -> bool {
        self.held != Some(token.generation)
    }

    /// Decides how a due refresh is served. `fresh` says whether a token is far enough from
    /// expiry to adopt; `reauthorized` (the operator changed the refresh-token file) skips
    /// adoption so the file's token is tried and, on success, becomes the fleet's.
    pub(crate) async fn plan(
        &mut self,
        fresh: &(dyn Fn(&SharedToken) -> bool + Sync),
        reauthorized: bool,
    ) -> Plan {
        match self.try_plan(fresh, reauthorized).await {
            Ok(plan) => {
                self.recovered();
                plan
            }
            Err(e) => {
                self.unreachable(&e);
                Plan::Local
            }
        }
    }

    async fn try_plan(
        &mut self,
        fresh: &(dyn Fn(&SharedToken) -> bool + Sync),
        reauthorized: bool,
    ) -> Result<Plan, FleetError> {
        let deadline = Instant::now() + self.lease_ttl;
        loop {
            let (token, _) = self.tokens.current().await?;
            if let Some(token) = token.filter(|t| !reauthorized && self.is_new(t) && fresh(t)) {
                return Ok(Plan::Adopt(token));
            }
            if let Some(lease) = self.tokens.try_lease(self.lease_ttl).await? {
                // Checked again under the lease: the previous holder may have published and
                // released between our read and our SET NX.
                let (token, generation) = match self.tokens.current().await {
                    Ok(current) => current,
                    Err(e) => {
                        let _ = lease.release().await;
                        return Err(e);
                    }
                };
                if let Some(token) = token
                    .as_ref()
                    .filter(|t| !reauthorized && self.is_new(t) && fresh(t))
                {
                    let _ = lease.release().await;
                    return Ok(Plan::Adopt(token.clone()));
                }
                return Ok(Plan::Lead {
                    lease: Box::new(lease),
                    generation: generation + 1,
                    fleet_refresh_token: token.and_then(|t| t.refresh_token),
                });
            }
            // Another replica is refreshing: its notice usually arrives first; retrying the
            // lease each second takes over from a holder that failed or released.
            let now = Instant::now();
            if now >= deadline {
                return Ok(Plan::Retry);
            }
            self.next_notice((deadline - now).min(POLL_INTERVAL)).await;
        }
    }

    /// Publishes a token fetched under `lease` and gives the lease back.
    pub(crate) async fn publish(&mut self, lease: Box<Lease>, token: SharedToken) -> Published {
        let written = self.tokens.publish(&lease, &token).await;
        let _ = lease.release().await;
        match written {
            Ok(FencedWrite::Written { generation }) => {
                self.held = Some(generation);
                Published::Written
            }
            Ok(FencedWrite::NotHolder | FencedWrite::Stale) => {
                tracing::warn!(
                    account = self.tokens.name(),
                    "fleet: the token write was refused (the lease lapsed during the token call, or a newer token is stored); taking the fleet's token"
                );
                let newer = match self.tokens.current().await {
                    Ok((Some(t), _)) if self.is_new(&t) => Some(t),
                    _ => None,
                };
                Published::Lost(newer)
            }
            Err(e) => {
                self.unreachable(&e);
                Published::Unshared
            }
        }
    }

    /// Gives up a lease after a failed token call, so a waiting replica can take over.
    pub(crate) async fn release(&mut self, lease: Box<Lease>) {
        let _ = lease.release().await;
    }

    /// The fleet's token after a notice, if it is one this replica does not hold yet.
    pub(crate) async fn announced(&mut self) -> Option<SharedToken> {
        match self.tokens.current().await {
            Ok((token, _)) => {
                self.recovered();
                token.filter(|t| self.is_new(t))
            }
            Err(e) => {
                self.unreachable(&e);
                None
            }
        }
    }

    /// Waits for a notice about this account. Returns the generation announced, or `None`
    /// after a lagging receiver (something may have changed: look).
    pub(crate) async fn notice(&mut self) -> Option<u64> {
        loop {
            match self.notices.recv().await {
                Ok(n) if n.account == self.tokens.name() => return Some(n.generation),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return None,
                // The watch task is gone (shutdown): nothing more will arrive.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    async fn next_notice(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.notice()).await;
    }

    fn unreachable(&mut self, error: &FleetError) {
        if !std::mem::replace(&mut self.local, true) {
            tracing::warn!(
                account = self.tokens.name(),
                "fleet: cannot share this account's token ({error}); this replica keeps its token and refreshes on its own when due"
            );
        }
    }

    fn recovered(&mut self) {
        if std::mem::replace(&mut self.local, false) {
            tracing::info!(
                account = self.tokens.name(),
                "fleet: sharing this account's token again"
            );
        }
    }
}

/// How long a shared token still lives, by this replica's clock.
pub(crate) fn remaining(expires_at_unix: u64, now: SystemTime) -> Duration {
    (UNIX_EPOCH + Duration::from_secs(expires_at_unix))
        .duration_since(now)
        .unwrap_or_default()
}

/// A token's expiry as the fleet records it: unix seconds, rounded down (conservative).
pub(crate) fn expires_at_unix(now: SystemTime, expires_in: Duration) -> u64 {
    (now + expires_in)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_round_trips_conservatively() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_700);
        let at = expires_at_unix(now, Duration::from_secs(1800));
        assert_eq!(at, 2_800);
        assert_eq!(remaining(at, now), Duration::from_millis(1_799_300));
        assert_eq!(remaining(900, now), Duration::ZERO);
    }
}
