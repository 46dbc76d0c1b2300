//! What to do with HubSpot's answer: deliver it, or send the request again. Resent are: a 401
//! EXPIRED_AUTHENTICATION (once, with the refreshed token), a 429 TEN_SECONDLY_ROLLING or
//! SECONDLY (HubSpot did not act on it), and 502/503/504/521-524 for idempotent methods.
//! Only requests whose body was kept can be resent. Every wait before a resend ends within the
//! request's deadline and `max_queue_wait_ms`; an answer that asks for longer goes to the client.

use std::time::Duration;

use http::{header, Method, Response};
use tokio::time::Instant;

use super::inspect::small_json;
use crate::account::Account;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::metrics::{ExpiredPassed, RateLimitPolicy, RetryReason};

/// When HubSpot's 429 names no Retry-After: a rolling window frees a slot within about a second.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(1);
const FIRST_5XX_BACKOFF: Duration = Duration::from_millis(250);

// Boxing the response would cost an allocation on every request, for a value that lives only
// from `judge` to the caller's match.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Verdict {
    Deliver(Response<ProxyBody>),
    Resend {
        after: Duration,
        reason: RetryReason,
    },
}

/// What one request has used up so far.
#[derive(Default)]
pub(crate) struct Attempts {
    expired_token: bool,
    rate_limited: u32,
    upstream_5xx: u32,
}

/// The request being judged: its method, the token generation it carried, whether it can be resent.
pub(crate) struct Sent {
    pub(crate) method: Method,
    pub(crate) generation: Option<u64>,
    pub(crate) resendable: bool,
    pub(crate) deadline: Instant,
}

/// Whether an answer with this status could be resent; every other one is delivered as is.
pub(crate) fn may_resend(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 429) || is_gateway_error(status.as_u16())
}

/// Bad gateway, unavailable, gateway timeout, and Cloudflare's 521-524 in front of HubSpot.
fn is_gateway_error(code: u16) -> bool {
    matches!(code, 502..=504 | 521..=524)
}

/// Callers skip this (and its future) when `may_resend` is false.
pub(crate) async fn judge(
    account: &Account,
    response: Response<ProxyBody>,
    sent: &Sent,
    attempts: &mut Attempts,
) -> Result<Verdict, ProxyError> {
    match response.status().as_u16() {
        401 => after_401(account, response, sent, attempts).await,
        429 => after_429(account, response, sent, attempts).await,
        code if is_gateway_error(code) => Ok(after_5xx(account, response, sent, attempts)),
        _ => Ok(Verdict::Deliver(response)),
    }
}

/// HubSpot says a 401 is a refresh signal only with category EXPIRED_AUTHENTICATION. The token
/// is then dead whatever its expiry said: drop it so no other request uses it, and resend once
/// with the refreshed one. Forced refreshes are spaced: within `refresh_min_interval_secs` of
/// the last one, HubSpot is rejecting fresh tokens too, and its 401 goes to the client.
async fn after_401(
    account: &Account,
    response: Response<ProxyBody>,
    sent: &Sent,
    attempts: &mut Attempts,
) -> Result<Verdict, ProxyError> {
    let (Some(generation), Some(refresh)) = (sent.generation, account.credential.refresh()) else {
        return Ok(Verdict::Deliver(response));
    };
    let (response, json) = small_json(response).await?;
    let expired = json.is_some_and(|v| v["category"] == "EXPIRED_AUTHENTICATION");
    if !expired {
        return Ok(Verdict::Deliver(response));
    }
    // Only a rejection of the token in the cell calls for a refresh; one of an older token
    // (already replaced, or already dropped and being refreshed) is simply replayed.
    let current = account.token.snapshot().map(|t| t.generation()) == Some(generation);
    let passed = if attempts.expired_token {
        Some(ExpiredPassed::ReplayRejected)
    } else if current && !refresh.may_force(std::time::Instant::now()) {
        Some(ExpiredPassed::RefreshSpaced)
    } else {
        None
    };
    if let Some(reason) = passed {
        account.metrics.expired_passed(reason);
        return Ok(Verdict::Deliver(response));
    }
    // A deliberate write from the request path: marking the token HubSpot rejected as stale.
    if current && account.token.invalidate(generation) {
        tracing::info!(account = %account.name, generation, "HubSpot reports the access token expired; refreshing");
    }
    if !sent.resendable {
        return Ok(Verdict::Deliver(response));
    }
    attempts.expired_token = true;
    Ok(Verdict::Resend {
        after: Duration::ZERO,
        reason: RetryReason::ExpiredToken,
    })
}

/// Whether waiting `wait` before a resend ends within the request's deadline and the account's
/// queue bound; past either, the client is better served by HubSpot's answer now.
fn may_wait(account: &Account, sent: &Sent, wait: Duration) -> bool {
    let bound = account.shaping.max_queue_wait;
    wait <= bound && Instant::now() + wait < sent.deadline
}

/// Counted by policy; the rolling and per-second policies are waited out and resent (whatever
/// the method: HubSpot did not act on the request). DAILY is never resent.
async fn after_429(
    account: &Account,
    response: Response<ProxyBody>,
    sent: &Sent,
    attempts: &mut Attempts,
) -> Result<Verdict, ProxyError> {
    let (response, json) = small_json(response).await?;
    let policy =
        RateLimitPolicy::from_policy_name(json.as_ref().and_then(|v| v["policyName"].as_str()));
    account.metrics.rate_limited(policy);
    // A developer key's DAILY limit is the developer app's, not this account's.
    if policy == RateLimitPolicy::Daily && sent.generation.is_some() {
        account.status.record_daily_limit();
        tracing::warn!(account = %account.name, "HubSpot's DAILY limit is reached; requests will fail until it resets");
    }
    let retryable = matches!(
        policy,
        RateLimitPolicy::TenSecondlyRolling | RateLimitPolicy::Secondly
    );
    let wait = retry_after(&response).unwrap_or(DEFAULT_429_WAIT);
    if retryable
        && sent.resendable
        && attempts.rate_limited < account.shaping.max_retries_429
        && may_wait(account, sent, wait)
    {
        attempts.rate_limited += 1;
        return Ok(Verdict::Resend {
            after: wait,
            reason: RetryReason::RateLimited,
        });
    }
    Ok(Verdict::Deliver(response))
}

/// Gateway errors say nothing about whether HubSpot acted, so only idempotent methods go again.
fn after_5xx(
    account: &Account,
    response: Response<ProxyBody>,
    sent: &Sent,
    attempts: &mut Attempts,
) -> Verdict {
    let idempotent = matches!(
        sent.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    );
    let wait = FIRST_5XX_BACKOFF * 2u32.pow(attempts.upstream_5xx.min(8));
    if idempotent
        && sent.resendable
        && attempts.upstream_5xx < account.shaping.max_retries_5xx
        && may_wait(account, sent, wait)
    {
        attempts.upstream_5xx += 1;
        return Verdict::Resend {
            after: wait,
            reason: RetryReason::Upstream5xx,
        };
    }
    Verdict::Deliver(response)
}

/// `Retry-After` in seconds (HubSpot does not send the HTTP-date form).
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    //! Under tokio's paused clock, so "now", the request deadline and every wait are exact.
    use super::*;
    use crate::account::Credential;
    use crate::config::{RateLimitConfig, Secret};
    use crate::metrics::Metrics;
    use crate::settings::RateLimitSettings;
    use crate::token_cell::RefreshControl;

    fn oauth() -> Credential {
        Credential::OAuth(std::sync::Arc::new(RefreshControl::new(
            Duration::from_secs(5),
        )))
    }

    fn account(kind: Credential) -> Account {
        let shaping = RateLimitConfig {
            max_queue_wait_ms: 5_000,
            ..RateLimitConfig::default()
        };
        Account::new(
            "main",
            kind,
            Metrics::new().for_account("main"),
            &RateLimitSettings::from(&shaping),
            None,
        )
    }

    fn sent(method: Method, generation: Option<u64>, deadline_secs: u64) -> Sent {
        Sent {
            method,
            generation,
            resendable: true,
            deadline: Instant::now() + Duration::from_secs(deadline_secs),
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<ProxyBody> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(ProxyBody::full(body.to_string())).unwrap()
    }

    fn rate_limited(policy: &str) -> Response<ProxyBody> {
        answer(
            429,
            &[],
            &format!(r#"{{"status":"error","policyName":"{policy}"}}"#),
        )
    }

    /// `Some((wait, reason))` for a resend, `None` for delivery (with the status delivered).
    async fn verdict(
        account: &Account,
        response: Response<ProxyBody>,
        sent: &Sent,
        attempts: &mut Attempts,
    ) -> Option<(Duration, RetryReason)> {
        let status = response.status();
        match judge(account, response, sent, attempts).await.ok()? {
            Verdict::Deliver(delivered) => {
                assert_eq!(delivered.status(), status, "delivered as received");
                None
            }
            Verdict::Resend { after, reason } => Some((after, reason)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rolling_and_secondly_429s_wait_retry_after_then_give_up() {
        let a = account(Credential::Static);
        let post = sent(Method::POST, Some(1), 30);
        let mut attempts = Attempts::default();
        let resend = |after| Some((after, RetryReason::RateLimited));
        // Whatever the method: HubSpot did not act on a rate-limited request.
        assert_eq!(
            verdict(
                &a,
                rate_limited("TEN_SECONDLY_ROLLING"),
                &post,
                &mut attempts
            )
            .await,
            resend(Duration::from_secs(1)),
            "no Retry-After: about a second"
        );
        let with_after = answer(429, &[("retry-after", "3")], r#"{"policyName":"SECONDLY"}"#);
        assert_eq!(
            verdict(&a, with_after, &post, &mut attempts).await,
            resend(Duration::from_secs(3))
        );
        // max_retries_429 = 2 used up: the third 429 goes to the client.
        assert_eq!(
            verdict(&a, rate_limited("SECONDLY"), &post, &mut attempts).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn daily_and_unnamed_429s_are_delivered_and_daily_is_recorded() {
        let a = account(Credential::Static);
        let get = sent(Method::GET, Some(1), 30);
        let mut attempts = Attempts::default();
        assert_eq!(a.status.snapshot().daily_limit_hit, None);
        assert_eq!(
            verdict(&a, rate_limited("DAILY"), &get, &mut attempts).await,
            None
        );
        assert!(a.status.snapshot().daily_limit_hit.is_some());
        // A developer key's DAILY limit (no bearer of ours) is not the account's.
        let b = account(Credential::Static);
        let developer = sent(Method::GET, None, 30);
        verdict(&b, rate_limited("DAILY"), &developer, &mut attempts).await;
        assert_eq!(b.status.snapshot().daily_limit_hit, None);
        assert_eq!(
            verdict(&a, answer(429, &[], "not json"), &get, &mut attempts).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_or_the_queue_bound_is_not_taken() {
        let a = account(Credential::Static);
        let retry_after = |secs: &str| {
            answer(
                429,
                &[("retry-after", secs)],
                r#"{"policyName":"TEN_SECONDLY_ROLLING"}"#,
            )
        };
        let get = sent(Method::GET, Some(1), 4);
        assert!(
            verdict(&a, retry_after("3"), &get, &mut Attempts::default())
                .await
                .is_some()
        );
        // Two seconds later the same wait would end past the request's deadline.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            verdict(&a, retry_after("3"), &get, &mut Attempts::default()).await,
            None
        );
        // max_queue_wait_ms = 5 s bounds the wait whatever the deadline.
        let far = sent(Method::GET, Some(1), 600);
        assert!(
            verdict(&a, retry_after("5"), &far, &mut Attempts::default())
                .await
                .is_some()
        );
        assert_eq!(
            verdict(&a, retry_after("6"), &far, &mut Attempts::default()).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_back_off_for_idempotent_methods_only() {
        let a = account(Credential::Static);
        let get = sent(Method::GET, Some(1), 30);
        let mut attempts = Attempts::default();
        let resend = |ms| Some((Duration::from_millis(ms), RetryReason::Upstream5xx));
        assert_eq!(
            verdict(&a, answer(502, &[], ""), &get, &mut attempts).await,
            resend(250)
        );
        assert_eq!(
            verdict(&a, answer(524, &[], ""), &get, &mut attempts).await,
            resend(500),
            "the backoff doubles"
        );
        assert_eq!(
            verdict(&a, answer(503, &[], ""), &get, &mut attempts).await,
            None,
            "max_retries_5xx = 2"
        );
        let post = sent(Method::POST, Some(1), 30);
        assert_eq!(
            verdict(&a, answer(503, &[], ""), &post, &mut Attempts::default()).await,
            None,
            "HubSpot may have acted on a POST"
        );
        for status in [500, 501, 505, 520, 525] {
            assert!(!may_resend(http::StatusCode::from_u16(status).unwrap()));
            assert_eq!(
                verdict(&a, answer(status, &[], ""), &get, &mut Attempts::default()).await,
                None
            );
        }
        // A body that was not kept cannot be sent again.
        let streamed = Sent {
            resendable: false,
            ..sent(Method::GET, Some(1), 30)
        };
        assert_eq!(
            verdict(
                &a,
                answer(502, &[], ""),
                &streamed,
                &mut Attempts::default()
            )
            .await,
            None
        );
    }

    const EXPIRED: &str = r#"{"status":"error","category":"EXPIRED_AUTHENTICATION"}"#;

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_401_invalidates_the_token_and_resends_once() {
        let a = account(oauth());
        let generation = a
            .token
            .store(&Secret::new("access-one".to_string()), None)
            .unwrap();
        let get = sent(Method::GET, Some(generation), 30);
        let mut attempts = Attempts::default();
        // Another 401 is HubSpot's answer to the client, and the token stays.
        let other = r#"{"status":"error","category":"INVALID_AUTHENTICATION"}"#;
        assert_eq!(
            verdict(&a, answer(401, &[], other), &get, &mut attempts).await,
            None
        );
        assert!(a.token.snapshot().is_some());
        assert_eq!(
            verdict(&a, answer(401, &[], EXPIRED), &get, &mut attempts).await,
            Some((Duration::ZERO, RetryReason::ExpiredToken))
        );
        assert!(
            a.token.snapshot().is_none(),
            "the rejected token is dropped"
        );
        // The resend was rejected too: deliver, no second refresh.
        assert_eq!(
            verdict(&a, answer(401, &[], EXPIRED), &get, &mut attempts).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_401s_for_static_tokens_or_within_the_refresh_spacing_are_delivered() {
        let a = account(Credential::Static);
        let generation = a
            .token
            .store(&Secret::new("pat-static".to_string()), None)
            .unwrap();
        let get = sent(Method::GET, Some(generation), 30);
        assert_eq!(
            verdict(
                &a,
                answer(401, &[], EXPIRED),
                &get,
                &mut Attempts::default()
            )
            .await,
            None,
            "nothing to refresh"
        );
        assert!(a.token.snapshot().is_some());
        // An OAuth token rejected right after a forced refresh: HubSpot rejects fresh ones too.
        let o = account(oauth());
        let generation = o
            .token
            .store(&Secret::new("access-one".to_string()), None)
            .unwrap();
        o.credential
            .refresh()
            .unwrap()
            .forcing(std::time::Instant::now());
        let get = sent(Method::GET, Some(generation), 30);
        assert_eq!(
            verdict(
                &o,
                answer(401, &[], EXPIRED),
                &get,
                &mut Attempts::default()
            )
            .await,
            None
        );
        assert!(o.token.snapshot().is_some(), "the token stays");
    }
}
