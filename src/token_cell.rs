//! The token cell: the one meeting point of the two planes. The control plane (the static-token
//! watcher, the OAuth refresher) stores bearer tokens here; the data plane loads them without
//! locks. `RefreshControl` is the way back: how a request that finds no usable token asks the
//! account's one refresher for one, and waits for its attempt.
//!
//! Nothing here spawns a writer: `credentials::activate` does that.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};

use crate::config::Secret;

/// A bearer token, ready to put on a request: building the header string happens once, here,
/// so the hot path only clones a reference-counted `HeaderValue`.
pub(crate) struct Token {
    header: HeaderValue,
    /// `None` for static tokens (private app tokens do not expire on their own).
    expires_at: Option<Instant>,
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("header", &"Bearer [redacted]")
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Token {
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn is_usable(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the token holds characters that cannot go in an HTTP header")]
pub(crate) struct InvalidToken;

/// The one meeting point of the two planes: an `ArcSwap` the data plane reads without locks.
#[derive(Default)]
pub(crate) struct TokenCell {
    current: ArcSwapOption<Token>,
    generation: AtomicU64,
}

impl TokenCell {
    /// The header for the next request, if the token is present and not expired.
    /// Requests already under way keep the value they cloned, whatever is stored later.
    #[cfg(test)]
    fn bearer(&self, now: Instant) -> Option<HeaderValue> {
        self.usable(now).map(|(header, _)| header)
    }

    /// The header and the generation it belongs to, so a rejection can name which token died.
    pub(crate) fn usable(&self, now: Instant) -> Option<(HeaderValue, u64)> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        token
            .is_usable(now)
            .then(|| (token.header.clone(), token.generation))
    }

    /// HubSpot said this generation is dead: drop it, unless a newer token already replaced it.
    /// Returns whether this call removed it.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        let guard = self.current.load();
        match guard.as_ref() {
            Some(token) if token.generation == generation => {
                let previous = self.current.compare_and_swap(&*guard, None);
                previous
                    .as_ref()
                    .is_some_and(|t| t.generation == generation)
            }
            _ => false,
        }
    }

    pub(crate) fn snapshot(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    pub(crate) fn is_ready(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|t| t.is_usable(now))
    }

    /// Swaps in a new token; only control-plane tasks call this.
    pub(crate) fn store(
        &self,
        secret: &Secret<String>,
        expires_at: Option<Instant>,
    ) -> Result<u64, InvalidToken> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
            .map_err(|_| InvalidToken)?;
        header.set_sensitive(true);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Some(Arc::new(Token {
            header,
            expires_at,
            generation,
        })));
        Ok(generation)
    }
}

/// How requests ask the account's one refresher for a token, and wait for its attempts.
/// Only the refresher calls the token endpoint: this is what keeps refreshes single-flight.
pub struct RefreshControl {
    wake: Notify,
    backing_off: AtomicBool,
    /// Bumped after every attempt, success or failure, so waiters can re-check the cell.
    attempts: watch::Sender<u64>,
    /// `oauth.refresh_min_interval_secs`: forced refreshes are at least this far apart.
    min_interval: Duration,
    /// When the last forced refresh (one a request asked for) started. Read on the rare
    /// EXPIRED_AUTHENTICATION path only, so a mutex costs nothing.
    last_forced: Mutex<Option<Instant>>,
}

impl RefreshControl {
    pub(crate) fn new(min_interval: Duration) -> Self {
        RefreshControl {
            wake: Notify::new(),
            backing_off: AtomicBool::new(false),
            attempts: watch::Sender::new(0),
            min_interval,
            last_forced: Mutex::new(None),
        }
    }

    /// Waits for a usable token from the refresher, until `deadline`. Returns `None` at once
    /// while the refresher is backing off after a failure: waiting would only hold the client.
    pub(crate) async fn wait_for_token(
        &self,
        cell: &TokenCell,
        deadline: tokio::time::Instant,
    ) -> Option<(HeaderValue, u64)> {
        let mut attempts = self.attempts.subscribe();
        loop {
            if let Some(usable) = cell.usable(Instant::now()) {
                return Some(usable);
            }
            if self.backing_off.load(Ordering::SeqCst) {
                return None;
            }
            self.wake.notify_one();
            tokio::select! {
                changed = attempts.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Whether a request may have the refresher refresh now: not within `min_interval` of the
    /// last forced refresh. HubSpot rejecting even fresh tokens must not become a storm.
    pub(crate) fn may_force(&self, now: Instant) -> bool {
        self.next_forced(now).is_none()
    }

    /// When the next forced refresh may start, if not now.
    pub(crate) fn next_forced(&self, now: Instant) -> Option<Instant> {
        let last = (*self.last_forced.lock().expect("refresh lock"))?;
        let at = last + self.min_interval;
        (now < at).then_some(at)
    }

    pub(crate) fn forcing(&self, now: Instant) {
        *self.last_forced.lock().expect("refresh lock") = Some(now);
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    pub(crate) fn attempt_started(&self) {
        self.backing_off.store(false, Ordering::SeqCst);
    }

    pub(crate) fn attempt_finished(&self, ok: bool) {
        self.backing_off.store(!ok, Ordering::SeqCst);
        self.attempts.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_and_expiry() {
        let cell = TokenCell::default();
        let now = Instant::now();
        assert!(cell.bearer(now).is_none());
        let g = cell.store(&Secret::new("abc".into()), None).unwrap();
        assert_eq!(g, 1);
        let h = cell.bearer(now).unwrap();
        assert_eq!(h, "Bearer abc");
        assert!(h.is_sensitive());
        cell.store(
            &Secret::new("def".into()),
            Some(now + Duration::from_secs(1)),
        )
        .unwrap();
        assert_eq!(h, "Bearer abc", "a cloned header keeps its token");
        assert_eq!(cell.bearer(now).unwrap(), "Bearer def");
        assert!(cell.bearer(now + Duration::from_secs(2)).is_none());
        assert!(!format!("{:?}", cell.snapshot().unwrap()).contains("def"));
    }

    #[test]
    fn invalidate_only_removes_the_named_generation() {
        let cell = TokenCell::default();
        let now = Instant::now();
        cell.store(&Secret::new("one".into()), None).unwrap();
        let g2 = cell.store(&Secret::new("two".into()), None).unwrap();
        assert!(
            !cell.invalidate(g2 - 1),
            "an older generation is already gone"
        );
        assert_eq!(cell.bearer(now).unwrap(), "Bearer two");
        assert!(cell.invalidate(g2));
        assert!(!cell.invalidate(g2), "only the first caller removes it");
        assert!(cell.bearer(now).is_none());
    }

    #[test]
    fn forced_refreshes_are_spaced_by_the_min_interval() {
        let s = Duration::from_secs;
        let control = RefreshControl::new(s(5));
        let t0 = Instant::now();
        assert!(control.may_force(t0), "nothing forced yet");
        control.forcing(t0);
        assert!(!control.may_force(t0 + s(4)));
        assert_eq!(control.next_forced(t0 + s(4)), Some(t0 + s(5)));
        assert!(control.may_force(t0 + s(5)));
        assert_eq!(control.next_forced(t0 + s(5)), None);
    }

    /// A stand-in refresher: waits to be woken, then makes one attempt lasting `took`.
    fn refresher(
        control: &Arc<RefreshControl>,
        cell: &Arc<TokenCell>,
        took: Duration,
        token: Option<&'static str>,
    ) -> tokio::task::JoinHandle<()> {
        let (control, cell) = (control.clone(), cell.clone());
        tokio::spawn(async move {
            control.woken().await;
            control.attempt_started();
            tokio::time::sleep(took).await;
            if let Some(token) = token {
                cell.store(&Secret::new(token.into()), None).unwrap();
            }
            control.attempt_finished(token.is_some());
        })
    }

    const DEADLINE: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_wakes_the_refresher_and_takes_its_token() {
        let control = Arc::new(RefreshControl::new(Duration::from_secs(5)));
        let cell = Arc::new(TokenCell::default());
        let task = refresher(&control, &cell, Duration::from_secs(2), Some("fresh"));
        let start = tokio::time::Instant::now();
        let (header, generation) = control
            .wait_for_token(&cell, start + DEADLINE)
            .await
            .expect("the refresher's token");
        assert_eq!(header, "Bearer fresh");
        assert_eq!(generation, 1);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "taken as it arrived"
        );
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_ends_the_wait_before_the_deadline() {
        let control = Arc::new(RefreshControl::new(Duration::from_secs(5)));
        let cell = Arc::new(TokenCell::default());
        let task = refresher(&control, &cell, Duration::from_secs(2), None);
        let start = tokio::time::Instant::now();
        assert!(control
            .wait_for_token(&cell, start + DEADLINE)
            .await
            .is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn while_backing_off_a_request_does_not_wait() {
        let control = RefreshControl::new(Duration::from_secs(5));
        let cell = TokenCell::default();
        control.attempt_started();
        control.attempt_finished(false);
        let start = tokio::time::Instant::now();
        assert!(control
            .wait_for_token(&cell, start + DEADLINE)
            .await
            .is_none());
        assert_eq!(start.elapsed(), Duration::ZERO, "answered at once");
        // The next attempt clears it: requests wait for that attempt again.
        control.attempt_started();
        assert!(control
            .wait_for_token(&cell, start + DEADLINE)
            .await
            .is_none());
        assert_eq!(start.elapsed(), DEADLINE);
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_answer_a_request_waits_until_its_deadline() {
        let control = RefreshControl::new(Duration::from_secs(5));
        let cell = TokenCell::default();
        let start = tokio::time::Instant::now();
        assert!(control
            .wait_for_token(&cell, start + DEADLINE)
            .await
            .is_none());
        assert_eq!(start.elapsed(), DEADLINE);
    }
}
