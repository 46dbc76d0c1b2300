//! Micro benchmarks for the pure pieces of the request path: `cargo bench --bench hot_path`.
//! Figures are recorded in bench/results.md. They exclude I/O; `bench/run.sh` measures that.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};

use hubspot_auth_proxy::account::{Account, Accounts, Credential};
use hubspot_auth_proxy::config::Config;
use hubspot_auth_proxy::metrics::Metrics;
use hubspot_auth_proxy::proxy::{hapikey, headers, route::Router};
use hubspot_auth_proxy::settings::Settings;

const PLAIN_QUERY: &str = "limit=100&after=12345&properties=email,firstname,lastname";
const KEYED_QUERY: &str = "limit=100&hapikey=demo-legacy-key-0001&properties=email";

fn hapikey_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("hapikey");
    group.bench_function("absent", |b| {
        b.iter(|| hapikey::present(black_box(PLAIN_QUERY)))
    });
    group.bench_function("present_strip", |b| {
        b.iter(|| {
            let query = black_box(KEYED_QUERY);
            // As the request path does: one look, then the strip that skips it.
            hapikey::present(query).then(|| hapikey::stripped(query))
        })
    });
    group.finish();
}

fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for &(name, value) in pairs {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// What a typical internal client sends: a handful of headers, its own (ignored) Authorization.
fn client_headers() -> HeaderMap {
    header_map(&[
        ("host", "hubspot-proxy.internal:8080"),
        ("user-agent", "python-requests/2.31.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "application/json"),
        ("authorization", "Bearer client-supplied"),
        ("x-request-id", "7d4c0c2e-4f5e-4a57-9f1e-3b2f3f1d9a10"),
    ])
}

/// What most HTTP/1.1 answers carry: `Connection: keep-alive` and nothing else hop-by-hop.
fn answer_headers() -> HeaderMap {
    header_map(&[
        ("date", "Tue, 24 Nov 2026 23:00:00 GMT"),
        ("content-type", "application/json;charset=utf-8"),
        ("content-length", "67"),
        ("connection", "keep-alive"),
        (
            "x-hubspot-correlation-id",
            "0f3c9d7e-8b1a-4c52-9e6f-2a7d5b3c1e90",
        ),
        ("x-hubspot-ratelimit-max", "190"),
        ("x-hubspot-ratelimit-remaining", "189"),
    ])
}

fn header_rewrite(c: &mut Criterion) {
    let bearer = HeaderValue::from_static("Bearer pat-na1-00000000-0000-0000-0000-000000000000");
    let mut group = c.benchmark_group("headers");
    group.bench_function("to_upstream_and_bearer", |b| {
        b.iter_batched_ref(
            client_headers,
            |h| {
                headers::to_upstream(h);
                headers::set_bearer(h, bearer.clone());
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("to_upstream_with_connection_list", |b| {
        b.iter_batched_ref(
            || {
                let mut h = client_headers();
                h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
                h.insert("x-hop", HeaderValue::from_static("1"));
                h
            },
            headers::to_upstream,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("from_upstream_keep_alive", |b| {
        b.iter_batched_ref(
            answer_headers,
            headers::from_upstream,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn router(metrics: &Metrics) -> Router {
    let mut text = String::new();
    for name in ["main", "marketing", "sales"] {
        text += &format!(
            "[[accounts]]\nname = \"{name}\"\ntoken = {{ env = \"T\" }}\n[accounts.rate_limit]\nper_ten_seconds = 0\n"
        );
    }
    // SHA-256 of "demo-legacy-key-0001".
    let key = hex_sha256("demo-legacy-key-0001");
    text += &format!("[[legacy.keys]]\nsha256 = \"{key}\"\naccount = \"sales\"\n");
    let settings = Settings::from_config(Config::parse(&text).unwrap()).unwrap();
    let accounts = settings
        .accounts
        .iter()
        .map(|a| {
            let m = metrics.for_account(&a.name);
            Arc::new(Account::new(
                &a.name,
                Credential::Static,
                m,
                &a.rate_limit,
                None,
            ))
        })
        .collect();
    Router::new(
        Arc::new(Accounts::new(accounts, settings.default_account)),
        &settings.legacy,
    )
}

fn hex_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn request_parts(uri: &str, account: Option<&'static str>) -> http::request::Parts {
    let mut builder = Request::get(uri);
    if let Some(name) = account {
        builder = builder.header("x-auth-proxy-account", name);
    }
    builder.body(()).expect("valid request").into_parts().0
}

fn account_selection(c: &mut Criterion) {
    let metrics = Metrics::new();
    let router = router(&metrics);
    let mut group = c.benchmark_group("route");
    let cases = [
        ("default", "/crm/v3/objects/contacts?limit=10", None),
        (
            "named_header",
            "/crm/v3/objects/contacts",
            Some("marketing"),
        ),
        (
            "hapikey_mapped",
            "/contacts/v1/lists/all/contacts/all?hapikey=demo-legacy-key-0001",
            None,
        ),
    ];
    for (name, uri, account) in cases {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || request_parts(uri, account),
                |parts| {
                    let hapikey = parts.uri.query().is_some_and(hapikey::present);
                    router.route(parts, hapikey).is_ok()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn metric_recording(c: &mut Criterion) {
    let metrics = Metrics::new();
    let account = metrics.for_account("main");
    let mut group = c.benchmark_group("metrics");
    group.bench_function("observe_request", |b| {
        b.iter(|| {
            account.observe(
                black_box(&Method::GET),
                black_box(StatusCode::OK),
                Duration::from_micros(420),
            )
        })
    });
    group.bench_function("api_family", |b| {
        b.iter(|| account.api_request(black_box("/crm/v3/objects/contacts/101")))
    });
    group.finish();
}

criterion_group!(
    benches,
    hapikey_rewrite,
    header_rewrite,
    account_selection,
    metric_recording
);
criterion_main!(benches);
