//! Credentials: the `TokenCell` where the control plane stores bearer tokens and the data plane loads them.

pub mod static_token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::config::Secret;

/// A bearer token, ready to put on a request: building the header string happens once, here,
/// so the hot path only clones a reference-counted `HeaderValue`.
pub struct Token {
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
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_usable(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the token holds characters that cannot go in an HTTP header")]
pub struct InvalidToken;

/// The one meeting point of the two planes: an `ArcSwap` the data plane reads without locks.
#[derive(Default)]
pub struct TokenCell {
    current: ArcSwapOption<Token>,
    generation: AtomicU64,
}

impl TokenCell {
    /// The header for the next request, if the token is present and not expired.
    /// Requests already under way keep the value they cloned, whatever is stored later.
    pub fn bearer(&self, now: Instant) -> Option<HeaderValue> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        token.is_usable(now).then(|| token.header.clone())
    }

    pub fn snapshot(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    pub fn is_ready(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|t| t.is_usable(now))
    }

    /// Swaps in a new token; only control-plane tasks call this.
    pub fn store(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
