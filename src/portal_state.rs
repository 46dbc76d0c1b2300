//! What is known about the portal an account's token belongs to: the `hub_id` the config
//! expects, what HubSpot last said about the token (portal, scopes, kind), and the data plane's
//! one-load check. Each `Account` holds one; `crate::portal` runs the checks that fill it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use crate::error::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    PrivateApp,
    ServiceKey,
    OAuth,
}

impl TokenKind {
    /// Private app tokens start `pat-`; any other static bearer is taken as a service key.
    pub(crate) fn of_static(token: &str) -> TokenKind {
        if token.starts_with("pat-") {
            TokenKind::PrivateApp
        } else {
            TokenKind::ServiceKey
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenKind::PrivateApp => "private_app",
            TokenKind::ServiceKey => "service_key",
            TokenKind::OAuth => "oauth",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Seen {
    hub_id: Option<u64>,
    scopes: Vec<String>,
    kind: Option<TokenKind>,
    last_error: Option<String>,
}

/// Per account: the expected portal, what the token says, and the data plane's one-load check.
#[derive(Default)]
pub(crate) struct Portal {
    expected: OnceLock<u64>,
    seen: Mutex<Seen>,
    /// The token's portal when it differs from `expected`; 0 when fine (hub ids are positive).
    wrong: AtomicU64,
}

impl Portal {
    pub(crate) fn expect(&self, hub_id: Option<u64>) {
        if let Some(id) = hub_id {
            let _ = self.expected.set(id);
        }
    }

    pub(crate) fn expected(&self) -> Option<u64> {
        self.expected.get().copied()
    }

    /// What HubSpot said about the current token (control plane only).
    pub(crate) fn observe(&self, hub_id: Option<u64>, scopes: Vec<String>, kind: TokenKind) {
        let wrong = match (self.expected(), hub_id) {
            (Some(expected), Some(actual)) if expected != actual => actual,
            _ => 0,
        };
        self.wrong.store(wrong, Ordering::SeqCst);
        *self.seen.lock().expect("portal lock") = Seen {
            hub_id,
            scopes,
            kind: Some(kind),
            last_error: None,
        };
    }

    /// The last check could not say (control plane only); what was seen before stays.
    pub(crate) fn check_failed(&self, kind: TokenKind, error: String) {
        let mut seen = self.seen.lock().expect("portal lock");
        seen.kind = Some(kind);
        seen.last_error = Some(error);
    }

    /// The scopes HubSpot last reported for the token (empty until it has said).
    pub(crate) fn scopes(&self) -> Vec<String> {
        self.seen.lock().expect("portal lock").scopes.clone()
    }

    /// `(expected, actual)` while the token belongs to another portal.
    pub(crate) fn mismatch(&self) -> Option<(u64, u64)> {
        match self.wrong.load(Ordering::SeqCst) {
            0 => None,
            actual => Some((self.expected().unwrap_or(0), actual)),
        }
    }

    /// The refusal for requests while the token belongs to another portal.
    pub(crate) fn refusal(&self, account: &Arc<str>) -> Option<ProxyError> {
        self.mismatch()
            .map(|(expected, actual)| ProxyError::WrongPortal {
                account: account.clone(),
                expected,
                actual,
            })
    }

    /// For `/status`: never the token.
    pub(crate) fn status(&self) -> Value {
        let seen = self.seen.lock().expect("portal lock").clone();
        json!({
            "hub_id": seen.hub_id,
            "expected_hub_id": self.expected(),
            "scopes": seen.scopes,
            "token_kind": seen.kind.map(TokenKind::as_str),
            "portal_check_error": seen.last_error,
        })
    }
}
