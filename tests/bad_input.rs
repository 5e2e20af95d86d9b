//! Hostile and malformed input: garbage instead of HTTP, broken framing,
//! oversized heads, bad JSON, slow clients. Every case gets a 4xx (in
//! OpenAI's error shape when sluice answers with a body) or a closed
//! connection, never a 5xx from sluice, and afterwards sluice is healthy and
//! serves a normal chat completion.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and servers, each awaited or dropped by its test"
)]

mod common;

use std::time::Duration;

use common::{Harness, chat, error_of, http};
use serde_json::{Value, json};
use sluice::config::Config;
use sluice::mock::MockOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UNDERSTOOD: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
];

/// Longest a raw exchange waits for sluice to answer and close; every
/// timeout configured below is shorter.
const READ_FOR: Duration = Duration::from_secs(8);

/// sluice with short client timeouts, so slow-client cases end quickly.
async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_with(tweak: impl FnOnce(&mut Config)) -> Harness {
    Harness::start_with(MockOptions::default(), |c| {
        c.server.header_read_timeout = Duration::from_secs(2);
        c.server.body_read_timeout = Duration::from_secs(1);
        // Two workers: a case that upsets one must not matter to the other.
        c.server.workers = 2;
        tweak(c);
    })
    .await
}

/// What the client does after writing its bytes.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Keeps the connection open and reads.
    Wait,
    /// Shuts down its sending side and reads.
    HalfClose,
    /// Closes the connection without reading.
    Close,
}

/// What came back on a raw connection.
struct Exchange {
    bytes: Vec<u8>,
    /// sluice closed the connection (EOF or reset) within [`READ_FOR`].
    closed: bool,
}

impl Exchange {
    /// The status of every HTTP/1.1 response in the bytes.
    fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.match_indices("HTTP/1.1 ")
            .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
            .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }

    /// The first response's body, by its content-length.
    fn first_body(&self) -> Option<&[u8]> {
        let end = self.bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.bytes[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        self.bytes.get(end + 4..end + 4 + length)
    }

    /// Asserts a 4xx or a closed connection, never a 5xx; a body sluice
    /// wrote itself is OpenAI-shaped. Returns the statuses.
    fn refused(&self, case: &str) -> Vec<u16> {
        let statuses = self.statuses();
        assert!(
            statuses.iter().all(|s| (400..500).contains(s)),
            "{case}: {statuses:?}\n{}",
            String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(2000)])
        );
        assert!(
            !statuses.is_empty() || self.closed,
            "{case}: neither an answer nor a closed connection"
        );
        if let Some(body) = self.first_body().filter(|b| !b.is_empty()) {
            let value: Value = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("{case}: body not JSON ({e}): {body:?}"));
            assert!(value["error"]["message"].is_string(), "{case}: {value}");
            assert!(value["error"]["type"].is_string(), "{case}: {value}");
        }
        statuses
    }
}

/// Writes `bytes` on a new connection, then does `then`, and reads what
/// comes back until sluice closes the connection or [`READ_FOR`] passes.
/// Write errors (sluice closing while the client still sends) end the
/// writing, not the test.
async fn exchange(h: &Harness, bytes: Vec<u8>, then: Then) -> Exchange {
    let stream = TcpStream::connect(h.sluice.addr()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    if let Then::Close = then {
        let _ = write.write_all(&bytes).await;
        drop((read, write));
        return Exchange {
            bytes: Vec::new(),
            closed: true,
        };
    }
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        if let Then::HalfClose = then {
            let _ = write.shutdown().await;
        }
        // Held (open) until the reading is done.
        write
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(READ_FOR, read.read_to_end(&mut received))
        .await
        .is_ok();
    drop(writer.await);
    Exchange {
        bytes: received,
        closed,
    }
}

/// A request head for `path` with these extra header lines.
fn head(method: &str, path: &str, headers: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nhost: sluice\r\n{headers}\r\n").into_bytes()
}

/// `/healthz` answers and a normal chat completion goes through.
async fn healthy(h: &Harness, after: &str) {
    let health = http().get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz after {after}");
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .json(&chat("still fine?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "chat completion after {after}");
}

#[tokio::test]
async fn malformed_http_is_refused_or_closed() {
    let h = harness().await;
    let chat_body = serde_json::to_vec(&chat("hi")).unwrap();
    let json_head = |length: usize| {
        head(
            "POST",
            "/v1/chat/completions",
            &format!("content-type: application/json\r\ncontent-length: {length}\r\n"),
        )
    };
    let with = |mut head: Vec<u8>, body: &[u8]| {
        head.extend_from_slice(body);
        head
    };
    let mut cases: Vec<(&str, Vec<u8>, Then)> = vec![
        (
            "garbage instead of HTTP",
            b"\x00\x01\x02\xff\xfe garbage \x7f\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        (
            "garbage request line",
            b"GET\x00/v1/models HTTP/9.9\r\n\r\n".to_vec(),
            Then::Wait,
        ),
        (
            "HTTP/2 preface then garbage frames",
            [
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
                &[0xff; 64][..],
                b"garbage",
            ]
            .concat(),
            Then::Wait,
        ),
        (
            "broken HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\nmore garbage".to_vec(),
            Then::Wait,
        ),
        (
            "declared length larger than sent, half-closed",
            with(json_head(chat_body.len() + 100), &chat_body),
            Then::HalfClose,
        ),
        (
            "declared length larger than sent, closed",
            with(json_head(chat_body.len() + 100), &chat_body),
            Then::Close,
        ),
        (
            "declared length larger than sent, then silence",
            with(json_head(chat_body.len() + 100), &chat_body),
            Then::Wait,
        ),
        (
            "declared length smaller than sent",
            with(json_head(10), &chat_body),
            Then::Wait,
        ),
        (
            "two content-lengths",
            with(
                head(
                    "POST",
                    "/v1/chat/completions",
                    "content-length: 5\r\ncontent-length: 7\r\n",
                ),
                b"{}{}{}{}",
            ),
            Then::Wait,
        ),
        (
            "invalid content-length",
            with(
                head("POST", "/v1/chat/completions", "content-length: -1\r\n"),
                b"{}",
            ),
            Then::Wait,
        ),
        (
            "bad chunk size",
            with(
                head(
                    "POST",
                    "/v1/chat/completions",
                    "transfer-encoding: chunked\r\n",
                ),
                b"zz\r\n{}\r\n0\r\n\r\n",
            ),
            Then::Wait,
        ),
    ];
    cases.push((
        "pass-through body declared larger than sent, half-closed",
        with(
            head("POST", "/v1/files", "content-length: 100\r\n"),
            b"0123456789",
        ),
        Then::HalfClose,
    ));
    for (case, bytes, then) in cases {
        let exchange = exchange(&h, bytes, then).await;
        let statuses = exchange.refused(case);
        if case.contains("then silence") {
            assert_eq!(statuses, [408], "{case}");
        }
        healthy(&h, case).await;
    }
    // A chunked body cut short, on an understood endpoint (read by ingress)
    // and on one whose body streams straight to the upstream. When it stops
    // coming, 408 after body_read_timeout either way.
    for path in ["/v1/chat/completions", "/v1/files"] {
        let truncated = with(
            head("POST", path, "transfer-encoding: chunked\r\n"),
            b"40\r\n{\"model\":\"gpt-4o-mini\",",
        );
        for then in [Then::HalfClose, Then::Wait, Then::Close] {
            let case = format!("{path}: truncated chunked body, then {then:?}");
            let exchange = exchange(&h, truncated.clone(), then).await;
            let statuses = exchange.refused(&case);
            match then {
                Then::HalfClose => assert_eq!(statuses, [400], "{case}"),
                Then::Wait => assert_eq!(statuses, [408], "{case}"),
                Then::Close => {}
            }
            healthy(&h, &case).await;
        }
    }
}

#[tokio::test]
async fn oversized_heads_get_431_414_or_close() {
    let h = harness().await;
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "one 1 MiB header",
            head(
                "GET",
                "/v1/models",
                &format!("x-big: {}\r\n", "a".repeat(1 << 20)),
            ),
            None,
        ),
        (
            "10,000 headers",
            head("GET", "/v1/models", &many(10_000)),
            None,
        ),
        (
            "101 headers (max_headers is 100)",
            head("GET", "/v1/models", &many(100)),
            Some(431),
        ),
        (
            "a 70 KiB head (max_header_size is 64 KiB)",
            head(
                "GET",
                "/v1/models",
                &format!("x-big: {}\r\n", "a".repeat(70 << 10)),
            ),
            Some(431),
        ),
        (
            "a 100 KiB URI",
            head(
                "GET",
                &format!("/v1/models?q={}", "a".repeat(100 << 10)),
                "",
            ),
            None,
        ),
    ];
    for (case, bytes, expected) in cases {
        let exchange = exchange(&h, bytes, Then::Wait).await;
        let statuses = exchange.refused(case);
        if let Some(expected) = expected {
            assert_eq!(statuses, [expected], "{case}");
        }
        healthy(&h, case).await;
    }
    // Under the head limit but over max_uri_length (8 KiB): 414 from sluice,
    // OpenAI-shaped, on understood and pass-through paths alike.
    for path in ["/v1/chat/completions", "/v1/models"] {
        let long = format!("{path}?q={}", "a".repeat(9 << 10));
        let response = http()
            .post(h.url(&long))
            .json(&chat("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 414, "{path}");
        assert_eq!(error_of(response).await["code"], "uri_too_long");
    }
    // Just within the limit passes.
    let ok = format!("/v1/chat/completions?q={}", "a".repeat(7 << 10));
    let response = http()
        .post(h.url(&ok))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    healthy(&h, "long URIs").await;

    // HTTP/2 (h2c): a header list over max_header_size is refused.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let big = h2
        .post(h.url("/v1/chat/completions"))
        .header("x-big", "a".repeat(100 << 10))
        .json(&chat("hi"))
        .send()
        .await;
    // 431 from the h2 server (a client could also refuse to send it).
    if let Ok(response) = big {
        assert_eq!(response.status(), 431, "h2 big header");
    }
    let long = format!("/v1/chat/completions?q={}", "a".repeat(9 << 10));
    let response = h2
        .post(h.url(&long))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 414, "h2 long URI");
    let fine = h2
        .post(h.url("/v1/chat/completions"))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200, "h2 after the refusals");
    healthy(&h, "h2 big headers").await;
}

#[tokio::test]
async fn bad_json_bodies_get_400() {
    let h = harness().await;
    let nested = |open: &str, close: &str, depth: usize| {
        format!(
            "{{\"model\":\"gpt-4o-mini\",\"messages\":{}{}}}",
            open.repeat(depth),
            close.repeat(depth)
        )
    };
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in a string".into(),
            b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc3\"}]}"
                .to_vec(),
        ),
        ("invalid UTF-8 in a key".into(), b"{\"\xff\":1}".to_vec()),
        ("an array".into(), b"[1, 2, 3]".to_vec()),
        ("a number".into(), b"42".to_vec()),
        ("a string".into(), b"\"hello\"".to_vec()),
        ("null".into(), b"null".to_vec()),
        ("true".into(), b"true".to_vec()),
        ("empty".into(), Vec::new()),
        ("100,000 [".into(), "[".repeat(100_000).into_bytes()),
        (
            "100,000 [ closed".into(),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        ("100,000 {\"a\":".into(), "{\"a\":".repeat(100_000).into_bytes()),
        (
            "a field nested 100,000 deep".into(),
            nested("[", "]", 100_000).into_bytes(),
        ),
        (
            "a field nested 65 deep (one over the limit)".into(),
            nested("[", "]", 64).into_bytes(),
        ),
        (
            "a field nested 200 deep (past serde_json's 128)".into(),
            nested("{\"a\":", "}", 200).into_bytes(),
        ),
        (
            "binary".into(),
            (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
        ),
        (
            "binary starting with {".into(),
            [&b"{"[..], &(0..=255u8).rev().collect::<Vec<u8>>()].concat(),
        ),
    ];
    bodies.push((
        "a lone surrogate escape".into(),
        br#"{"model":"\ud800"}"#.to_vec(),
    ));
    for path in UNDERSTOOD {
        for (case, body) in &bodies {
            let response = http()
                .post(h.url(path))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            if case == "a lone surrogate escape" {
                // serde_json accepts it into a raw field; whatever the
                // upstream makes of it, sluice itself does not fail.
                assert!(status.as_u16() < 500, "{path} {case}: {status}");
                continue;
            }
            assert_eq!(status, 400, "{path} {case}");
            let error = error_of(response).await;
            assert_eq!(error["type"], "invalid_request_error", "{path} {case}");
            if case.contains("nested") || case.starts_with("100,000") {
                assert_eq!(error["code"], "json_too_deep", "{path} {case}: {error}");
            }
        }
    }
    // Nested exactly to the limit is accepted (and forwarded).
    let at_limit = nested("[", "]", 63);
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert!(response.status().as_u16() < 500, "{}", response.status());
    assert_ne!(
        response.headers().get("x-sluice-upstream"),
        None,
        "depth 64 was not forwarded"
    );
    healthy(&h, "bad JSON bodies").await;
}

#[tokio::test]
async fn fields_of_the_wrong_type_never_get_a_sluice_5xx() {
    let h = harness().await;
    let wrong = [
        json!({"model": "gpt-4o-mini", "messages": 5}),
        json!({"model": [], "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "gpt-4o-mini", "stream": "yes", "messages": []}),
        json!({"model": "gpt-4o-mini", "stream": true, "messages": 5}),
        json!({"model": {"a": 1}, "input": 5, "prompt": {}, "stream": 1}),
        json!({"model": "gpt-4o-mini", "messages": [5, null, "x", {"role": 7, "content": []}]}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "assistant", "tool_calls": 5}, {"role": "tool", "content": {}}]}),
        json!({"model": "gpt-4o-mini", "tools": "x", "input": [1, [2]], "instructions": 5}),
        json!({"model": "gpt-4o-mini", "prompt": [[1, 2], [3]], "input": [[-1], "x"]}),
        json!({"model": "gpt-4o-mini", "stream_options": 5, "n": "two", "max_tokens": -1}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        json!({"model": "", "messages": [{"role": "user", "content": ""}]}),
        json!({}),
    ];
    for path in UNDERSTOOD {
        for body in &wrong {
            for (prune, compress) in [("off", "off"), ("on", "aggressive")] {
                let response = http()
                    .post(h.url(path))
                    .header("x-sluice-prune", prune)
                    .header("x-sluice-compress", compress)
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let forwarded = response.headers().contains_key("x-sluice-upstream");
                assert!(
                    status.as_u16() < 500,
                    "{path} {body} (prune {prune}): {status}"
                );
                // Read it to the end: a stream must not break either.
                let text = response.text().await.unwrap();
                assert!(
                    !text.contains("upstream_stream_failed"),
                    "{path} {body}: {text}"
                );
                if !status.is_success() && !forwarded {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    assert!(value["error"]["type"].is_string(), "{text}");
                }
            }
        }
    }
    healthy(&h, "fields of the wrong type").await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_a_steady_slow_one_is_served() {
    let h = harness().await;
    // Half a body, then nothing: 408 after body_read_timeout (1s).
    let body = serde_json::to_vec(&chat("slow")).unwrap();
    let mut bytes = head(
        "POST",
        "/v1/chat/completions",
        &format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ),
    );
    bytes.extend_from_slice(&body[..body.len() / 2]);
    let started = std::time::Instant::now();
    let stalled = exchange(&h, bytes, Then::Wait).await;
    assert_eq!(stalled.refused("stalled body"), [408]);
    assert!(stalled.closed, "connection left open after a 408");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let value: Value = serde_json::from_slice(stalled.first_body().unwrap()).unwrap();
    assert_eq!(value["error"]["code"], "request_body_timeout");

    // The same body in pieces 400ms apart, each within the timeout, though
    // the whole takes longer than it: served.
    let stream = TcpStream::connect(h.sluice.addr()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(&head(
            "POST",
            "/v1/chat/completions",
            &format!(
                "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            ),
        ))
        .await
        .unwrap();
    for piece in body.chunks(body.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        write.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(READ_FOR, read.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    healthy(&h, "slow bodies").await;
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let h = harness().await;
    // A kept-alive connection that sends nothing after its first request is
    // closed once header_read_timeout (2s) passes.
    let mut stream = TcpStream::connect(h.sluice.addr()).await.unwrap();
    stream
        .write_all(&head("GET", "/healthz", ""))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(READ_FOR, stream.read_to_end(&mut received)).await;
    assert!(closed.is_ok(), "idle keep-alive connection still open");
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Half a head, then nothing: closed too (with 408 or silently).
    let half = exchange(
        &h,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: s".to_vec(),
        Then::Wait,
    )
    .await;
    half.refused("half a head");
    assert!(half.closed, "half a head left open");
    healthy(&h, "idle connections").await;
}

#[tokio::test]
async fn limits_can_be_configured() {
    let h = harness_with(|c| {
        c.server.max_headers = 20;
        c.server.max_uri_length = bytesize::ByteSize::b(100);
        c.server.max_json_depth = 3;
    })
    .await;
    let many = (0..25)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect::<String>();
    let exchange = exchange(&h, head("GET", "/v1/models", &many), Then::Wait).await;
    assert_eq!(exchange.refused("25 headers"), [431]);
    let long = format!("/v1/models?q={}", "a".repeat(100));
    let response = http().get(h.url(&long)).send().await.unwrap();
    assert_eq!(response.status(), 414);
    let deep = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let response = h.post("/v1/chat/completions", &deep).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["code"], "json_too_deep");
    let flat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.post("/v1/chat/completions", &flat).await.status(), 200);
}

#[tokio::test]
async fn the_deepest_body_allowed_never_gets_a_sluice_5xx() {
    // 128 is the largest max_json_depth; serde_json's own limit is near it.
    let h = harness_with(|c| c.server.max_json_depth = 128).await;
    for depth in [126, 127, 128] {
        // The top-level object is one level; `messages` holds the rest.
        let inner = depth - 1;
        let body = format!(
            "{{\"model\":\"gpt-4o-mini\",\"messages\":{}{}}}",
            "[".repeat(inner),
            "]".repeat(inner)
        );
        for path in UNDERSTOOD {
            for stream in [false, true] {
                let body = if stream {
                    body.replacen('{', "{\"stream\":true,", 1)
                } else {
                    body.clone()
                };
                let response = http()
                    .post(h.url(path))
                    .header("content-type", "application/json")
                    .header("x-sluice-prune", "on")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert!(status.as_u16() < 500, "{path} depth {depth}: {status}");
            }
        }
    }
    let too_deep = format!(
        "{{\"model\":\"gpt-4o-mini\",\"messages\":{}{}}}",
        "[".repeat(128),
        "]".repeat(128)
    );
    let response = http()
        .post(h.url("/v1/chat/completions"))
        .body(too_deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["code"], "json_too_deep");
    healthy(&h, "the deepest bodies").await;
}

/// A path whose segments leave `/v1/` would reach the upstream outside its
/// API, with sluice's upstream key: refused with 404, nothing sent.
#[tokio::test]
async fn dot_segments_never_leave_v1() {
    let h = harness_with(|c| {
        c.upstreams[0].api_key = Some(sluice::config::Secret::new("sk-upstream-secret"));
    })
    .await;
    for path in [
        "/v1/../secret",
        "/v1/%2e%2e/secret",
        "/v1/%2E%2E/secret",
        "/v1/models/../../admin/keys",
        "/v1/..%2fsecret",
        "/v1/..;/secret",
        "/v1/./models",
        "/v1/..\\secret",
    ] {
        for method in ["GET", "POST"] {
            let request = head(method, path, "content-length: 2\r\nconnection: close\r\n")
                .into_iter()
                .chain(*b"{}")
                .collect();
            let answer = exchange(&h, request, Then::Wait).await;
            let statuses = answer.refused(path);
            assert!(
                statuses.first().is_some_and(|s| [400, 404].contains(s)),
                "{method} {path}: {statuses:?}"
            );
        }
    }
    assert!(
        h.mock.requests().is_empty(),
        "reached the upstream: {:?}",
        h.mock
            .requests()
            .iter()
            .map(|r| r.path_and_query.clone())
            .collect::<Vec<_>>()
    );
    // The same client's ordinary request goes through, with the key.
    let answer = http().get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let seen = h.last_upstream_request("/v1/models");
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-secret");
    // A query may hold dots: it is not a path.
    let answer = http()
        .get(h.url("/v1/models?after=../x"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        h.last_upstream_request("/v1/models?").path_and_query,
        "/v1/models?after=../x"
    );
    healthy(&h, "dot segments").await;
}

/// RFC 9112 §3.2: a request with two `Host` headers gets 400.
#[tokio::test]
async fn two_host_headers_get_400() {
    let h = harness().await;
    let body = serde_json::to_vec(&chat("hi")).unwrap();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\nhost: elsewhere.example\r\n\
         content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let answer = exchange(&h, request, Then::Wait).await;
    assert_eq!(answer.refused("two Host headers"), [400]);
    assert!(h.mock.requests().is_empty());
    healthy(&h, "two Host headers").await;
}

/// Bytes that are not yet a request never hold a connection open: nothing
/// at all, a lone `P`, the HTTP/2 preface but its last byte. Each is closed
/// once header_read_timeout (2s) passes, as a half-sent HTTP/1.1 head is.
#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let h = harness().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (case, bytes) in [
        ("nothing", Vec::new()),
        ("a lone P", b"P".to_vec()),
        (
            "the HTTP/2 preface but its last byte",
            preface[..preface.len() - 1].to_vec(),
        ),
        ("the whole HTTP/2 preface", preface.to_vec()),
    ] {
        let answer = exchange(&h, bytes, Then::Wait).await;
        assert!(answer.closed, "{case}: still open after {READ_FOR:?}");
        answer.refused(case);
    }
    healthy(&h, "silent connections").await;
}

/// An HTTP/2 connection whose streams have all ended is closed after
/// header_read_timeout, as an idle HTTP/1.1 keep-alive connection is.
#[tokio::test]
async fn an_http2_connection_with_no_stream_open_is_closed() {
    let h = harness().await;
    let stream = TcpStream::connect(h.sluice.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(conn);
    let request = http::Request::get(h.url("/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let ended = tokio::time::timeout(READ_FOR, connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    healthy(&h, "idle HTTP/2").await;
}

/// Past `max_connections` a new connection is closed as soon as it is
/// accepted, and counted; once others close, new ones are served again.
#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once() {
    let h = harness_with(|c| c.server.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(h.sluice.addr()).await.unwrap();
        // A request makes sure each is accepted before the next.
        stream
            .write_all(&head("GET", "/healthz", ""))
            .await
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut extra = TcpStream::connect(h.sluice.addr()).await.unwrap();
    let _ = extra.write_all(&head("GET", "/healthz", "")).await;
    let mut received = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut received)).await;
    assert!(
        closed.is_ok() && received.is_empty(),
        "a connection past the limit was served: {:?}",
        String::from_utf8_lossy(&received)
    );
    drop(held);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            http().get(h.url("/healthz")).send().await.is_ok()
        })
        .await
    );
    let refused = common::metric(&h.url(""), "sluice_connections_refused_total").await;
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
}
