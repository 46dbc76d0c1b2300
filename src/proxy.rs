//! The data plane: one client request, checked, given its account's bearer, sent to HubSpot and streamed back.
//!
//! `Proxy::forward` runs the request through named stages, each with one way out:
//! *gate* (network, limits, path, client identity; `gate`) → *route* (account, credential,
//! hapikey; [`route`]) → *authorize* (the client's accounts and rules) → *prepare* (target,
//! headers, replay copy) → *exchange* (send, judge, resend).

pub(crate) mod access_log;
pub(crate) mod gate;
pub mod hapikey;
pub mod headers;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod path_gate;
pub(crate) mod replay;
pub(crate) mod retry;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::account::Account;
use crate::admission::Admission;
use crate::body::{OutboundBody, ProxyBody};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::migration::{self, caller};
use crate::ratelimit;
use crate::shaping::Admit;
use crate::upstream::Upstream;
use access_log::AccessLog;
use gate::Gated;
use limits::RequestLimits;
use route::{CredentialSource, Refused, Routed, Router};

pub(crate) struct Proxy {
    admission: Arc<Admission>,
    upstream: Upstream,
    router: Router,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
    access_log: AccessLog,
    replay_budget: Arc<replay::ReplayBudget>,
    migration: MigrationHook,
}

/// Where forwarded requests are counted for the migration report, and whether answers to
/// deprecated APIs get Deprecation/Sunset headers (`server.deprecation_headers`).
#[derive(Clone)]
pub(crate) struct MigrationHook {
    pub(crate) report: Arc<migration::Report>,
    pub(crate) deprecation_headers: bool,
}

/// What every worker's proxy shares: built once at startup, cloned per worker.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) admission: Arc<Admission>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: RequestLimits,
    pub(crate) access_log: bool,
    pub(crate) replay_budget: Arc<replay::ReplayBudget>,
    pub(crate) migration: MigrationHook,
}

/// A request ready to send: the first copy, the kept copy a resend is built from (if the
/// body could be kept), and what the retry judge needs to know about it.
struct Prepared {
    first: Request<OutboundBody>,
    replay: Option<replay::Replay>,
    sent: retry::Sent,
    /// A search request, shaped under the search budget too.
    search: bool,
}

impl Proxy {
    /// One worker's proxy: its own upstream client and router, and the process-wide pieces.
    pub(crate) fn new(upstream: Upstream, router: Router, shared: Shared) -> Self {
        let Shared {
            admission,
            metrics,
            limits,
            access_log,
            replay_budget,
            migration,
        } = shared;
        Proxy {
            admission,
            upstream,
            router,
            metrics,
            limits,
            access_log: AccessLog::new(access_log),
            replay_budget,
            migration,
        }
    }

    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let method = request.method().clone();
        // Looked for once: the log line redacts it, the gate and the router act on it.
        let hapikey = request.uri().query().is_some_and(hapikey::present);
        let target = self.access_log.target(request.uri(), hapikey);
        // Boxed: hyper allocates room for this future with every connection, idle or not
        // (`Box<Option<future>>`), so a large inline future costs every idle connection.
        let forwarded = Box::pin(self.forward(request, peer, hapikey, started));
        let (account, response) = match forwarded.await {
            Ok((account, response)) => (account, response),
            Err(Refused { account, error }) => {
                if let ProxyError::ClientBody { fault } = error {
                    self.metrics.bodies().client_fault(fault);
                }
                tracing::warn!(account = %account.name, %method, category = error.category(), "{error}");
                (account, error.to_response())
            }
        };
        let elapsed = started.elapsed();
        account.metrics.observe(&method, response.status(), elapsed);
        if let Some(target) = target {
            self.access_log
                .write(&account.name, &method, &target, &response, elapsed);
        }
        response
    }

    /// The stages, in order, each with one way out. A refusal counts under the account known
    /// when it happens: the default account before routing, the routed one from then on.
    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: std::net::SocketAddr,
        hapikey: bool,
        started: Instant,
    ) -> Result<(&Arc<Account>, Response<ProxyBody>), Refused<'_>> {
        let default = self.router.default_account();
        let before_routing = |error| Refused {
            account: default,
            error,
        };
        let mut gated = gate::pass(&self.admission, &self.limits, request, peer, hapikey)
            .map_err(before_routing)?;
        // The router's refusals name their account: the default, or the one a header named.
        let routed = self.router.route(&mut gated.parts, gated.hapikey)?;
        let account = routed.account;
        let refuse = |error| Refused { account, error };
        self.authorize(&gated, &routed).map_err(refuse)?;
        let support = self.record(&gated, &routed);
        let prepared = self
            .prepare(account, gated, started)
            .await
            .map_err(refuse)?;
        let mut response = self
            .exchange(account, routed.credential, prepared)
            .await
            .map_err(refuse)?;
        if self.migration.deprecation_headers {
            migration::add_deprecation_headers(response.headers_mut(), &support);
        }
        Ok((account, response))
    }

    /// With `[[clients]]`, the client (named by its key, or by the legacy key the router
    /// mapped) may use the routed account, and one of its rules allows the method and path.
    fn authorize(
        &self,
        gated: &Gated<'_, Incoming>,
        routed: &Routed<'_>,
    ) -> Result<(), ProxyError> {
        if !self.admission.requires_client_key() {
            return Ok(());
        }
        let client = gated
            .client
            .or_else(|| {
                routed
                    .legacy_client
                    .and_then(|n| self.admission.client_named(n))
            })
            .ok_or_else(|| self.admission.unauthenticated())?;
        let account = &routed.account.name;
        self.admission
            .authorize(client, account, &gated.parts.method, gated.parts.uri.path())
    }

    /// Counts the request for its API family and the migration report, under who called: a
    /// client key, a legacy key, a declared name, or anonymous.
    fn record(
        &self,
        gated: &Gated<'_, Incoming>,
        routed: &Routed<'_>,
    ) -> migration::generation::Support {
        let account = routed.account;
        let path = gated.parts.uri.path();
        let api = account.metrics.api_request(path);
        let caller_name = gated
            .client
            .map(|c| &*c.name)
            .or(routed.legacy_client)
            .or(routed.legacy_label)
            .or(gated.declared.as_ref().map(caller::name))
            .unwrap_or(migration::ANONYMOUS);
        self.migration
            .report
            .record(caller_name, &account.name, path, api)
    }

    /// Points the request at HubSpot, with hop-by-hop and proxy headers gone, and reads or
    /// streams the body into the first copy (keeping a replay copy when the account may resend).
    async fn prepare(
        &self,
        account: &Account,
        gated: Gated<'_, Incoming>,
        started: Instant,
    ) -> Result<Prepared, ProxyError> {
        let Gated {
            mut parts, body, ..
        } = gated;
        let deadline = tokio::time::Instant::from_std(started) + self.upstream.timeout();
        let search = ratelimit::is_search(&parts.method, parts.uri.path());
        let method = parts.method.clone();
        parts.uri = self.upstream.target(parts.uri)?;
        // The upstream client picks HTTP/1.1 or h2 per connection by ALPN.
        parts.version = Version::HTTP_11;
        headers::to_upstream(&mut parts.headers);
        let budget = account.may_resend().then_some(&self.replay_budget);
        let (first, replay) =
            replay::outbound(parts, body, self.limits.body(), budget, deadline).await?;
        let sent = retry::Sent {
            method,
            generation: None,
            resendable: replay.is_some(),
            deadline,
        };
        Ok(Prepared {
            first,
            replay,
            sent,
            search,
        })
    }

    /// Sends, judges HubSpot's answer, and resends from the kept copy while the verdict says so.
    /// Each send waits for its slot under the account's rate limit, then takes the current bearer.
    async fn exchange(
        &self,
        account: &Account,
        credential: CredentialSource,
        prepared: Prepared,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Prepared {
            first,
            replay,
            mut sent,
            search,
        } = prepared;
        let mut attempts = retry::Attempts::default();
        let mut request = first;
        loop {
            // The bearer this attempt carries, for a copy resent because HubSpot never processed it.
            let mut bearer_sent = None;
            if credential == CredentialSource::Account {
                // Developer keys are the developer app's budget, not the account's.
                admit(account, search, sent.deadline).await?;
                let (bearer, generation) = account
                    .bearer(Instant::now(), sent.deadline)
                    .await
                    .ok_or_else(|| account.no_token_error())?;
                // Checked after the bearer arrives: the check that names the portal may have
                // finished while this request waited for its first token.
                if let Some(error) = account.portal.refusal(&account.name) {
                    return Err(error);
                }
                headers::set_bearer(request.headers_mut(), bearer.clone());
                bearer_sent = Some(bearer);
                sent.generation = Some(generation);
            }
            // A resend of a request HubSpot never processed keeps this attempt's rate-limit
            // admission: HubSpot did not count it, so admitting it again would shape twice.
            let again = || {
                let mut copy = replay.as_ref()?.request();
                if let Some(bearer) = &bearer_sent {
                    headers::set_bearer(copy.headers_mut(), bearer.clone());
                }
                Some(copy)
            };
            let bearer = credential == CredentialSource::Account;
            let response = self
                .send(account, request, again, sent.deadline, bearer)
                .await?;
            if !retry::may_resend(response.status()) {
                return Ok(response);
            }
            // Boxed: judging waits on bodies and refreshes, a large future that every request
            // would otherwise carry (and copy) for the rare answer that needs it.
            let verdict = Box::pin(retry::judge(account, response, &sent, &mut attempts));
            match verdict.await? {
                retry::Verdict::Deliver(response) => return Ok(response),
                retry::Verdict::Resend { after, reason } => {
                    account.metrics.retried(reason);
                    // `judge` kept `after` within the request's deadline and the queue bound.
                    tokio::time::sleep(after).await;
                    request = replay.as_ref().expect("resendable").request();
                }
            }
        }
    }

    async fn send(
        &self,
        account: &Account,
        request: Request<OutboundBody>,
        again: impl Fn() -> Option<Request<OutboundBody>>,
        deadline: tokio::time::Instant,
        bearer: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let sent = Instant::now();
        let resent = || {
            account
                .metrics
                .retried(crate::metrics::RetryReason::Unprocessed)
        };
        let (response, slot) = self
            .upstream
            .send(request, again, resent, deadline)
            .await
            .inspect_err(|e| count_upstream_error(account, e))?;
        account
            .metrics
            .upstream_answered(response.status(), sent.elapsed());
        if bearer {
            // A deliberate write from the request path: HubSpot's figures for the account's
            // bearer feed its budget, gauges and /status. Developer-key and forwarded-key
            // answers report another app's budget and must not.
            adapt(
                account,
                account.metrics.ratelimit_reported(response.headers()),
            );
        }
        let (mut parts, body) = response.into_parts();
        if headers::drop_conflicting_length(&mut parts.headers) {
            self.metrics.bodies().framing_conflict();
            tracing::warn!(account = %account.name, "HubSpot's answer had both Transfer-Encoding and Content-Length; the length was dropped");
        }
        headers::from_upstream(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(
            parts,
            ProxyBody::forwarded(body, deadline, slot),
        ))
    }
}

/// Waits for the request's slot under the account's budget (local or fleet-wide), or refuses
/// past the wait bound. A client that leaves while queued drops this future, and with it the slot.
async fn admit(
    account: &Account,
    search: bool,
    deadline: tokio::time::Instant,
) -> Result<(), ProxyError> {
    match account.admit(search, deadline).await {
        // The wait was recorded when the slot was granted (`Account::admit`).
        Admit::Go { .. } => Ok(()),
        Admit::Refused { retry_after } => {
            account.metrics.shaping_rejected();
            Err(ProxyError::RateLimited { retry_after })
        }
    }
}

/// HubSpot reports the app's real 10-second budget: shape to it, within the configured ceiling.
fn adapt(account: &Account, ten_second_max: Option<i64>) {
    let (Some(shaper), Some(max)) = (&account.shaper, ten_second_max) else {
        return;
    };
    if !account.shaping.adaptive {
        return;
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    // In fleet mode a change is stored for every replica (once per change, not per answer).
    if let Some(previous) = shaper.follow_reported(max) {
        let now = shaper.limit();
        if now < previous {
            tracing::info!(account = %account.name, max, budget = now, "HubSpot reports a lower 10-second limit; shaping to it");
        } else {
            tracing::info!(account = %account.name, max, budget = now, "HubSpot reports a higher 10-second limit; shaping to it");
        }
    }
}

fn count_upstream_error(account: &Account, error: &ProxyError) {
    match error {
        ProxyError::UpstreamUnreachable { kind } => account.metrics.upstream_error(*kind),
        ProxyError::UpstreamTimeout { .. } => account
            .metrics
            .upstream_error(crate::metrics::UpstreamErrorKind::Timeout),
        _ => {}
    }
}
