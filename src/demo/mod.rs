//! `sluice demo`: a first run without an API key.
//!
//! In one process it starts the mock upstream (with a small, API-like
//! latency) and sluice in front of it, built from a config made here (never
//! `config/sluice.toml`, no environment variables), then sends a short,
//! realistic mix of requests through sluice: a question and its repeat, a
//! streamed answer and its repeat, embeddings and their repeat, a long agent
//! conversation with pruning on, a prompt of pasted logs and commented code
//! with aggressive compression, and identical requests sent at once. Last it
//! measures what sluice adds to a request's latency: plain requests that miss
//! the cache, sent straight to the upstream and through sluice in turn, with
//! the upstream answering at once.
//!
//! [`run`] returns a [`Report`]; [`Report::write`] prints it as a table and a
//! summary. Any answer that is not a 2xx, or a request that fails, ends the
//! demo with a [`DemoError`].

mod content;

use content::{agent_conversation, logs_and_code};
use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::Config;
use crate::mock::{MockOptions, MockUpstream};
use crate::tokens::Encoding;

/// The mock's wait before each answer's head in the request mix.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(30);
/// The mock's wait between streamed chunks in the request mix.
const UPSTREAM_CHUNK_DELAY: Duration = Duration::from_millis(4);
/// Identical requests sent at once to show coalescing.
const AT_ONCE: usize = 5;
/// Requests timed each way for the added latency, after [`WARMUP`] untimed ones.
const LATENCY_SAMPLES: usize = 200;
const WARMUP: usize = 20;
/// Longest any one request of the demo may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the demo stopped: one line naming the request and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(String);

/// One request of the mix as the client saw it.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the request was.
    pub what: String,
    pub status: StatusCode,
    /// `x-sluice-cache`, or `-` when absent.
    pub cache: String,
    /// `x-sluice-prompt-tokens-original` and `-sent`.
    pub tokens: Option<(u64, u64)>,
    /// Request sent to the answer's last byte.
    pub elapsed: Duration,
}

/// What the demo found.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Requests of the mix that reached the mock upstream.
    pub upstream_calls: usize,
    /// Added latency (through sluice minus straight to the upstream), p50 and p99.
    pub added_p50: Duration,
    pub added_p99: Duration,
    /// Latency samples taken each way.
    pub samples: usize,
    /// Straight to the upstream, p50, for scale.
    pub direct_p50: Duration,
}

/// Starts the mock upstream and sluice, sends the mix, measures the added
/// latency, and shuts both down.
pub async fn run() -> Result<Report, DemoError> {
    // A long-running sluice has its token encoders loaded; load both now so
    // the first rows do not time a one-off load (tens of milliseconds).
    let encoders = [Encoding::O200kBase, Encoding::Cl100kBase].map(|encoding| {
        tokio::task::spawn_blocking(move || {
            let _ = encoding.tokenizer();
        })
    });
    for loading in encoders {
        let _ = loading.await;
    }
    let mock = MockUpstream::start(MockOptions {
        latency: UPSTREAM_LATENCY,
        chunk_delay: UPSTREAM_CHUNK_DELAY,
        record: true,
        ..MockOptions::default()
    })
    .await
    .map_err(|e| DemoError(format!("cannot start the mock upstream: {e}")))?;
    let config = config(&mock.base_url())?;
    let sluice = crate::server::start(config)
        .await
        .map_err(|e| DemoError(format!("cannot start sluice: {e}")))?;
    let client = client();
    let proxy = format!("http://{}", sluice.addr());
    let upstream = format!("http://{}", mock.addr());

    let result = async {
        let calls_before = upstream_calls(&mock);
        let rows = mix(&client, &proxy).await?;
        let upstream_calls = upstream_calls(&mock) - calls_before;
        let latency = added_latency(&client, &proxy, &upstream).await?;
        Ok::<_, DemoError>(Report {
            rows,
            upstream_calls,
            added_p50: latency.added_p50,
            added_p99: latency.added_p99,
            samples: LATENCY_SAMPLES,
            direct_p50: latency.direct_p50,
        })
    }
    .await;

    drop(client);
    sluice.shutdown();
    // Idle connections close at once; nothing is in flight any more.
    if tokio::time::timeout(Duration::from_secs(5), sluice.wait())
        .await
        .is_err()
    {
        tracing::warn!("sluice took more than 5 s to stop");
    }
    drop(mock);
    result
}

/// sluice in front of the mock: a free port, one worker, memory cache,
/// every other setting at its default.
fn config(upstream: &str) -> Result<Config, DemoError> {
    let mut config = Config::default();
    config.server.listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    config.server.workers = 1;
    config.cache.enabled = true;
    config.cache.redis_url = String::new();
    if let Some(first) = config.upstreams.first_mut() {
        first.name = "mock".to_owned();
        first.base_url = upstream.to_owned();
    }
    config
        .validate()
        .map_err(|e| DemoError(format!("demo config: {e}")))?;
    Ok(config)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// POSTs the mock received (its answers to HEADs that warm sluice's
/// connections are not requests of the demo).
fn upstream_calls(mock: &MockUpstream) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.method == http::Method::POST)
        .count()
}

/// One answer, read to its end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    elapsed: Duration,
}

/// POSTs `body` to `base` + `path`; any transport error, timeout or non-2xx
/// answer is an error naming `what`.
async fn post(
    client: &HttpClient,
    base: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
    what: &str,
) -> Result<Answer, DemoError> {
    let fail = |reason: String| DemoError(format!("{what} (POST {base}{path}): {reason}"));
    let mut request = Request::post(format!("{base}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let bytes = serde_json::to_vec(body).map_err(|e| fail(e.to_string()))?;
    let request = request
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| fail(e.to_string()))?;
    let started = Instant::now();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| fail(root_cause(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| fail(format!("answer cut short: {}", root_cause(&e))))?
            .to_bytes();
        Ok::<_, DemoError>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))??;
    let elapsed = started.elapsed();
    if !parts.status.is_success() {
        let detail = String::from_utf8_lossy(&body);
        let detail: String = detail.chars().take(200).collect();
        return Err(fail(format!("{} {}", parts.status, detail.trim())));
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        elapsed,
    })
}

/// The innermost cause of an error: the part that says what happened.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn row(what: &str, answer: &Answer) -> Row {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
    let tokens =
        number("x-sluice-prompt-tokens-original").zip(number("x-sluice-prompt-tokens-sent"));
    Row {
        what: what.to_owned(),
        status: answer.status,
        cache: header("x-sluice-cache").unwrap_or("-").to_owned(),
        tokens,
        elapsed: answer.elapsed,
    }
}

const CHAT: &str = "/v1/chat/completions";
const EMBEDDINGS: &str = "/v1/embeddings";

fn chat(model: &str, messages: Value) -> Value {
    json!({"model": model, "messages": messages})
}

fn user(text: &str) -> Value {
    chat("gpt-4o-mini", json!([{"role": "user", "content": text}]))
}

/// The request mix, one row per request.
async fn mix(client: &HttpClient, proxy: &str) -> Result<Vec<Row>, DemoError> {
    let mut rows = Vec::new();
    let mut send = async |what: &str, path: &str, body: &Value, headers: &[(&str, &str)]| {
        let answer = post(client, proxy, path, body, headers, what).await?;
        if body.get("stream") == Some(&json!(true))
            && !String::from_utf8_lossy(&answer.body)
                .trim_end()
                .ends_with("data: [DONE]")
        {
            return Err(DemoError(format!(
                "{what}: the stream did not end with [DONE]"
            )));
        }
        rows.push(row(what, &answer));
        Ok::<_, DemoError>(())
    };

    let question = user("In two sentences: what does a reverse proxy do?");
    send("chat question", CHAT, &question, &[]).await?;
    send("same question again", CHAT, &question, &[]).await?;

    let mut streamed = user("Write a haiku about connection pools.");
    streamed["stream"] = json!(true);
    send("streamed answer", CHAT, &streamed, &[]).await?;
    send("same stream again", CHAT, &streamed, &[]).await?;

    let embeddings = json!({
        "model": "text-embedding-3-small",
        "input": [
            "sluice caches identical requests",
            "pruning trims long agent conversations",
            "compression removes comments and repeated log lines",
        ],
    });
    send("embeddings, 3 inputs", EMBEDDINGS, &embeddings, &[]).await?;
    send("same embeddings again", EMBEDDINGS, &embeddings, &[]).await?;

    let agent = agent_conversation();
    let turns = agent["messages"].as_array().map_or(0, Vec::len);
    send(
        &format!("agent chat, {turns} messages, prune on"),
        CHAT,
        &agent,
        &[("x-sluice-prune", "on")],
    )
    .await?;
    send(
        "pasted logs + code, compress aggressive",
        CHAT,
        &logs_and_code(),
        &[("x-sluice-compress", "aggressive")],
    )
    .await?;

    let popular = user("What is the capital of Australia?");
    let answers = futures_util::future::join_all((0..AT_ONCE).map(|i| {
        let what = format!("same question x{AT_ONCE} at once ({})", i + 1);
        let popular = &popular;
        async move {
            let answer = post(client, proxy, CHAT, popular, &[], &what).await?;
            Ok::<_, DemoError>(row(&what, &answer))
        }
    }))
    .await;
    for answer in answers {
        rows.push(answer?);
    }
    Ok(rows)
}

struct Latency {
    added_p50: Duration,
    added_p99: Duration,
    direct_p50: Duration,
}

/// Plain requests that miss the cache, each sent straight to the upstream
/// and through sluice in turn (which goes first alternates), with the
/// upstream answering at once.
async fn added_latency(
    client: &HttpClient,
    proxy: &str,
    upstream: &str,
) -> Result<Latency, DemoError> {
    const NOW: [(&str, &str); 1] = [(crate::mock::controls::LATENCY_MS, "0")];
    let mut added = Vec::with_capacity(LATENCY_SAMPLES);
    let mut direct = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..WARMUP + LATENCY_SAMPLES {
        let body = user(&format!("Latency probe {i}: reply with the number {i}."));
        let what = format!("latency probe {i}");
        let timed = async |base: &str| {
            post(client, base, CHAT, &body, &NOW, &what)
                .await
                .map(|a| a.elapsed)
        };
        let (straight, through) = if i % 2 == 0 {
            let straight = timed(upstream).await?;
            (straight, timed(proxy).await?)
        } else {
            let through = timed(proxy).await?;
            (timed(upstream).await?, through)
        };
        if i >= WARMUP {
            direct.push(straight);
            added.push(through.as_secs_f64() - straight.as_secs_f64());
        }
    }
    added.sort_by(f64::total_cmp);
    direct.sort();
    let at = |q: usize, len: usize| (len * q).div_ceil(100).saturating_sub(1);
    let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0));
    Ok(Latency {
        added_p50: seconds(added.get(at(50, added.len())).copied().unwrap_or(0.0)),
        added_p99: seconds(added.get(at(99, added.len())).copied().unwrap_or(0.0)),
        direct_p50: direct
            .get(at(50, direct.len()))
            .copied()
            .unwrap_or_default(),
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Report {
    /// Requests of the mix answered from the cache: hits and coalesced.
    pub fn from_cache(&self) -> (usize, usize) {
        let count = |what: &str| self.rows.iter().filter(|r| r.cache == what).count();
        (count("hit"), count("coalesced"))
    }

    /// Prompt tokens of the mix as the clients sent them and as forwarded.
    pub fn tokens(&self) -> (u64, u64) {
        self.rows
            .iter()
            .filter_map(|r| r.tokens)
            .fold((0, 0), |(o, s), (ro, rs)| (o + ro, s + rs))
    }

    /// The table and the summary.
    pub fn write(&self, out: &mut impl io::Write) -> io::Result<()> {
        let width = self
            .rows
            .iter()
            .map(|r| r.what.chars().count())
            .max()
            .unwrap_or(0)
            .max("request".len());
        writeln!(
            out,
            "{:<width$}  {:>6}  {:<9}  {:>17}  {:>7}",
            "request", "status", "cache", "prompt tokens", "ms"
        )?;
        for row in &self.rows {
            let tokens = row
                .tokens
                .map_or_else(|| "-".to_owned(), |(o, s)| format!("{o} → {s}"));
            writeln!(
                out,
                "{:<width$}  {:>6}  {:<9}  {:>17}  {:>7.1}",
                row.what,
                row.status.as_u16(),
                row.cache,
                tokens,
                ms(row.elapsed)
            )?;
        }
        let (hits, coalesced) = self.from_cache();
        let (original, sent) = self.tokens();
        let saved = if original == 0 {
            0.0
        } else {
            100.0 * (original.saturating_sub(sent)) as f64 / original as f64
        };
        writeln!(out)?;
        writeln!(out, "requests             {}", self.rows.len())?;
        writeln!(
            out,
            "answered from cache  {} ({hits} hits, {coalesced} coalesced)",
            hits + coalesced
        )?;
        writeln!(
            out,
            "upstream calls       {} (counted at the mock upstream)",
            self.upstream_calls
        )?;
        writeln!(
            out,
            "prompt tokens        {original} → {sent} sent ({saved:.0}% saved by pruning and compression)"
        )?;
        writeln!(
            out,
            "added latency        p50 {:.2} ms, p99 {:.2} ms (sluice minus straight to the upstream, {} requests; upstream alone p50 {:.2} ms)",
            ms(self.added_p50),
            ms(self.added_p99),
            self.samples,
            ms(self.direct_p50)
        )?;
        Ok(())
    }
}
