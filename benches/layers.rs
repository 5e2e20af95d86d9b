//! What the traffic-control layers add to a request: client-key check,
//! local rate limits (requests and tokens per minute) and per-session
//! ordering, run over an inner service that answers at once, against the
//! same inner service alone. Each iteration is one request, answered and its
//! body read to the end (which settles its token reservation and frees its
//! session), with a new prompt (tokens counted afresh) from one of 50
//! clients and sessions.
//!
//!     cargo bench --bench layers -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::BodyExt;
use sluice::auth::AuthLayer;
use sluice::body::{self, Body};
use sluice::config::{CacheConfig, RateLimitConfig, SessionsConfig, parse_client_keys};
use sluice::error::Error;
use sluice::openai::{ApiRequest, Endpoint};
use sluice::rate_limit::RateLimitLayer;
use sluice::session::SessionLayer;
use sluice::tokens::{Counter, Encoding};
use tower::{Layer, Service, ServiceExt};

const CLIENTS: usize = 50;

fn answer() -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from_static(
        br#"{"choices":[{"message":{"content":"ok"}}],"usage":{"total_tokens":40}}"#,
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Request `i`: a client's key, its session, and a prompt of its own.
fn request(i: usize, keys: &[String]) -> Request<Body> {
    let client = i % CLIENTS;
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":64,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Question {i}: how do I read a file line by line in Rust, and what about errors?"}}]}}"#
    );
    let api = ApiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {}", keys[client]))
        .header("x-session-id", format!("session-{client}"))
        .body(body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    req.extensions_mut().insert(api);
    req
}

async fn run<S>(service: &mut S, req: Request<Body>)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    let response = service
        .ready()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .call(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    black_box(bytes);
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = (0..CLIENTS)
        .map(|i| format!("ck-bench-{i:04}-0123456789"))
        .collect();
    let listed: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("client-{i}:{k}"))
        .collect();
    let client_keys = parse_client_keys(&listed.join(",")).unwrap_or_else(|e| panic!("{e}"));
    let counter = Arc::new(Counter::new(Encoding::O200kBase));
    // Load the encoding before measuring.
    black_box(counter.text(Encoding::O200kBase, "warm up"));

    let inner = tower::service_fn(|_req: Request<Body>| async { Ok::<_, Error>(answer()) });
    let limits = RateLimitConfig {
        // High enough never to refuse: the cost measured is the bookkeeping.
        requests_per_minute: Some(u32::MAX / 2),
        tokens_per_minute: Some(u64::from(u32::MAX)),
        redis_url: None,
    };
    let cache = CacheConfig::default();
    let sessions = SessionsConfig::default();

    let mut group = c.benchmark_group("layers");
    let mut i = 0usize;
    let mut bare = inner;
    group.bench_function("inner service alone", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(run(&mut bare, request(i, &keys)));
        });
    });
    let mut passing = AuthLayer::new(&[]).layer(
        RateLimitLayer::new(&RateLimitConfig::default(), &cache, counter.clone())
            .layer(SessionLayer::new(&sessions).layer(inner)),
    );
    group.bench_function("layers configured off", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(run(&mut passing, request(i, &keys)));
        });
    });
    let mut on = AuthLayer::new(&client_keys).layer(
        RateLimitLayer::new(&limits, &cache, counter.clone())
            .layer(SessionLayer::new(&sessions).layer(inner)),
    );
    group.bench_function("client keys + rpm + tpm + session", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(run(&mut on, request(i, &keys)));
        });
    });
    let mut rpm_only = AuthLayer::new(&client_keys).layer(
        RateLimitLayer::new(
            &RateLimitConfig {
                tokens_per_minute: None,
                ..limits.clone()
            },
            &cache,
            counter.clone(),
        )
        .layer(SessionLayer::new(&sessions).layer(inner)),
    );
    group.bench_function("client keys + rpm + session", |b| {
        b.iter(|| {
            i += 1;
            runtime.block_on(run(&mut rpm_only, request(i, &keys)));
        });
    });
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
