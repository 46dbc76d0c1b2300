//! The sealed token exchange: the lease holder publishes each new OAuth token (sealed, with a
//! TTL of its lifetime, fenced) and announces it on a pub/sub channel; every replica hears the
//! announcement, or at worst finds the new generation by polling once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::connection::{FleetError, Redis};
use super::keys::{self, AccountKeys};
use super::lease::{FencedWrite, Lease};
use super::seal::{Sealer, SharedToken};
use crate::config::Secret;

/// Replicas pick up a new token within this long even when pub/sub is lost.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// "This account has a new token": names and numbers only, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenNotice {
    pub account: String,
    pub generation: u64,
}

/// The fleet's token exchange; cheap to clone.
#[derive(Clone)]
pub struct FleetTokens {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    namespace: String,
    notices: broadcast::Sender<TokenNotice>,
    /// Accounts registered here, with the last generation seen (0: none yet).
    seen: Mutex<HashMap<String, u64>>,
}

impl FleetTokens {
    pub fn new(redis: Redis, namespace: &str) -> FleetTokens {
        FleetTokens {
            inner: Arc::new(Inner {
                redis,
                namespace: namespace.to_owned(),
                notices: broadcast::channel(64).0,
                seen: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// An OAuth account's handle; its sealing key comes from its client secret.
    pub fn account(&self, name: &str, client_secret: &Secret<String>) -> AccountTokens {
        self.inner
            .seen
            .lock()
            .expect("tokens lock")
            .entry(name.to_owned())
            .or_insert(0);
        AccountTokens {
            tokens: self.clone(),
            name: name.to_owned(),
            keys: AccountKeys::new(&self.inner.namespace, name),
            sealer: Arc::new(Sealer::new(&self.inner.namespace, name, client_secret)),
        }
    }

    /// New tokens of registered accounts, from pub/sub or the poll, each generation once.
    pub fn subscribe(&self) -> broadcast::Receiver<TokenNotice> {
        self.inner.notices.subscribe()
    }

    /// Listens on the channel and polls until dropped (the caller spawns and aborts it).
    pub(crate) async fn run(self) {
        let listener = self.clone().listen();
        let poller = async {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // A failed poll is the fallback's business (logged once by the connection).
                let _ = self.poll().await;
            }
        };
        tokio::join!(listener, poller);
    }

    /// Reads every registered account's generation in one MGET and announces the changes.
    pub async fn poll(&self) -> Result<(), FleetError> {
        let names: Vec<String> = self
            .inner
            .seen
            .lock()
            .expect("tokens lock")
            .keys()
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = names
            .iter()
            .map(|n| AccountKeys::new(&self.inner.namespace, n).generation)
            .collect();
        let generations: Vec<Option<u64>> = self
            .inner
            .redis
            .call(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        for (name, generation) in names.into_iter().zip(generations) {
            if let Some(generation) = generation {
                self.heard(name, generation);
            }
        }
        Ok(())
    }

    fn heard(&self, account: String, generation: u64) {
        let changed = {
            let mut seen = self.inner.seen.lock().expect("tokens lock");
            match seen.get_mut(&account) {
                Some(last) if *last != generation => {
                    *last = generation;
                    true
                }
                _ => false,
            }
        };
        if changed {
            let _ = self.inner.notices.send(TokenNotice {
                account,
                generation,
            });
        }
    }

    /// Pub/sub needs a connection of its own; when it drops, the poll carries on alone and the
    /// listener reconnects after a pause.
    async fn listen(self) {
        let channel = keys::tokens_channel(&self.inner.namespace);
        loop {
            if let Ok(mut pubsub) = self.inner.redis.pubsub().await {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        if let Some((account, generation)) = parse_notice(&payload) {
                            self.heard(account.to_owned(), generation);
                        }
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn notice(account: &str, generation: u64) -> String {
    format!("{account} {generation}")
}

fn parse_notice(payload: &str) -> Option<(&str, u64)> {
    let (account, generation) = payload.split_once(' ')?;
    Some((account, generation.parse().ok()?))
}

/// One OAuth account's view of the exchange.
#[derive(Clone)]
pub struct AccountTokens {
    tokens: FleetTokens,
    name: String,
    keys: AccountKeys,
    sealer: Arc<Sealer>,
}

impl AccountTokens {
    /// The fleet's current token, if any. An error means Redis trouble or a record this
    /// account's client secret cannot open (replicas configured with different secrets).
    pub async fn latest(&self) -> Result<Option<SharedToken>, FleetError> {
        let key = self.keys.token.clone();
        let sealed: Option<Vec<u8>> = self
            .tokens
            .inner
            .redis
            .call(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        match sealed {
            None => Ok(None),
            Some(sealed) => {
                let token = self.sealer.open(&sealed).map_err(FleetError::from)?;
                self.tokens.heard(self.name.clone(), token.generation);
                Ok(Some(token))
            }
        }
    }

    /// The fleet's current token and the account's generation counter, in one round trip.
    /// The counter outlives the token record, so a publisher under the lease writes
    /// `generation + 1` even after the record itself has lapsed.
    pub(crate) async fn current(&self) -> Result<(Option<SharedToken>, u64), FleetError> {
        let keys = [self.keys.token.clone(), self.keys.generation.clone()];
        let (sealed, generation): (Option<Vec<u8>>, Option<u64>) = self
            .tokens
            .inner
            .redis
            .call(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let generation = generation.unwrap_or(0);
        let token = match sealed {
            None => None,
            Some(sealed) => Some(self.sealer.open(&sealed).map_err(FleetError::from)?),
        };
        self.tokens.heard(self.name.clone(), generation);
        Ok((token, generation))
    }

    /// Takes this account's refresh lease if no replica holds it.
    pub async fn try_lease(&self, ttl: Duration) -> Result<Option<Lease>, FleetError> {
        Lease::acquire(&self.tokens.inner.redis, &self.keys, ttl).await
    }

    /// Publishes `token` (its `generation` must be the latest seen + 1) while `lease` holds.
    /// The record lives as long as the token; announced on the channel when written.
    pub async fn publish(
        &self,
        lease: &Lease,
        token: &SharedToken,
    ) -> Result<FencedWrite, FleetError> {
        let sealed = self.sealer.seal(token);
        let written = lease
            .write_fenced(
                &sealed,
                lifetime(token.expires_at, SystemTime::now()),
                token.generation,
                &keys::tokens_channel(&self.tokens.inner.namespace),
                &notice(&self.name, token.generation),
            )
            .await?;
        if let FencedWrite::Written { generation } = written {
            self.tokens.heard(self.name.clone(), generation);
        }
        Ok(written)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The record's TTL: what is left of the token's life (at least a second, so SET PX accepts it).
fn lifetime(expires_at: u64, now: SystemTime) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Duration::from_secs(expires_at.saturating_sub(now).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_name_and_generation_only() {
        assert_eq!(notice("main", 42), "main 42");
        assert_eq!(parse_notice("main 42"), Some(("main", 42)));
        assert_eq!(parse_notice("main"), None);
        assert_eq!(parse_notice("main x"), None);
    }

    #[test]
    fn the_record_lives_as_long_as_the_token() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(lifetime(2_800, now), Duration::from_secs(1_800));
        assert_eq!(lifetime(900, now), Duration::from_secs(1));
    }
}
