//! Cost of the cache key on the request path: parsing a chat body
//! (`ApiRequest::parse`) and building its key (`cache::key::build`), separately and
//! together, for the ~2 KB chat request of the load benchmark and for a ~200 KB
//! agent conversation (many turns with code, logs and tool calls) generated here.
//!
//!     cargo bench --bench cache_key -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sluice::cache::key::{self, Scope};
use sluice::openai::{ApiRequest, Endpoint};

const PATH: &str = "/v1/chat/completions";
const CLIENT: &[u8; 32] = &[7; 32];

/// The load benchmark's chat request: a system prompt and five turns.
const SMALL: &[u8] = include_bytes!("load/fixtures/request.json");

/// A deterministic pseudo-random sequence (64-bit LCG), so the large body is the
/// same bytes on every run and machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

const IDENTS: &[&str] = &[
    "request", "upstream", "budget", "tokens", "entry", "cache", "stream", "chunk", "pool",
    "retry", "deadline", "config", "router", "handler", "buffer", "offset",
];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const MODULES: &[&str] = &[
    "sluice::upstream::pool",
    "sluice::cache",
    "sluice::edge::budget",
    "hyper_util::client::legacy",
    "sluice::server",
];

/// A Rust function of `lines` lines, the kind an agent reads and edits.
fn code(rng: &mut Lcg, lines: usize) -> String {
    let name = format!("{}_{}", rng.pick(IDENTS), rng.pick(IDENTS));
    let mut out = format!(
        "```rust\n/// Handles one {} for the {}.\npub fn {name}(&mut self, input: &[u8]) -> Result<usize, Error> {{\n",
        rng.pick(IDENTS),
        rng.pick(IDENTS)
    );
    for i in 0..lines {
        let (a, b) = (rng.pick(IDENTS), rng.pick(IDENTS));
        out.push_str(&match rng.next() % 4 {
            0 => format!("    let {a}_{i} = self.{b}.get(\"{a}\").ok_or(Error::Missing(\"{b}\"))?;\n"),
            1 => format!("    if {a}.len() > {} {{\n        return Err(Error::TooLarge {{ limit: {} }});\n    }}\n", rng.next() % 4096, rng.next() % 65536),
            2 => format!("    // {a}: keep the {b} \"as sent\"\\t(tab) until it is flushed.\n"),
            _ => format!("    self.{a}.push_str(&format!(\"{{}}:{{}}\", {b}, {i}));\n"),
        });
    }
    out.push_str("    Ok(input.len())\n}\n```\n");
    out
}

/// `lines` lines of service log, with timestamps, quotes and a stack trace now
/// and then.
fn logs(rng: &mut Lcg, lines: usize) -> String {
    let mut out = String::new();
    for _ in 0..lines {
        let level = rng.pick(LEVELS);
        out.push_str(&format!(
            "2026-11-21T{:02}:{:02}:{:02}.{:06}Z {level:5} {} request_id=\"req-{:016x}\" {}={} latency_ms={}.{:03}\n",
            rng.next() % 24,
            rng.next() % 60,
            rng.next() % 60,
            rng.next() % 1_000_000,
            rng.pick(MODULES),
            rng.next(),
            rng.pick(IDENTS),
            rng.next() % 10_000,
            rng.next() % 2_000,
            rng.next() % 1_000,
        ));
        if level == "ERROR" {
            out.push_str("thread 'tokio-runtime-worker' panicked at src/upstream/pool.rs:212:9:\n  called `Result::unwrap()` on an `Err` value: Os { code: 104, kind: ConnectionReset, message: \"Connection reset by peer\" }\n");
        }
    }
    out
}

/// A long agent conversation of at least `min_len` bytes: a system prompt, tool
/// definitions, then rounds of user asks, assistant tool calls (arguments as
/// JSON strings) with code, and tool results with logs.
fn agent_body(min_len: usize) -> Bytes {
    let mut rng = Lcg(0x5eed_cafe);
    let mut messages = vec![json!({
        "role": "system",
        "content": "You are a coding agent working in the `sluice` repository. Read files with \
                    `read_file`, run commands with `run`, and edit with `apply_patch`. Keep \
                    changes minimal; run the tests before you say you are done.",
    })];
    let tools = json!([
        {"type": "function", "function": {"name": "read_file", "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                "required": ["path"]}}},
        {"type": "function", "function": {"name": "run", "description": "Run a shell command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"},
                "timeout_s": {"type": "integer"}}, "required": ["command"]}}},
        {"type": "function", "function": {"name": "apply_patch", "description": "Apply a diff.",
            "parameters": {"type": "object", "properties": {"patch": {"type": "string"}},
                "required": ["patch"]}}},
    ]);
    let request = |messages: &Vec<Value>| {
        json!({
            "model": "gpt-4o",
            "messages": messages,
            "tools": tools,
            "tool_choice": "auto",
            "temperature": 0.2,
            "max_tokens": 4096,
            "stream": false,
            "user": "agent-7",
        })
    };
    let mut turn = 0u64;
    loop {
        let body = serde_json::to_vec(&request(&messages)).unwrap_or_else(|e| panic!("{e}"));
        if body.len() >= min_len {
            return Bytes::from(body);
        }
        turn += 1;
        let id = format!("call_{:024x}", (rng.next() << 20) | turn);
        messages.push(json!({
            "role": "user",
            "content": format!("The {} test fails again. Here is what I changed:\n\n{}\nWhat is wrong?",
                rng.pick(IDENTS), code(&mut rng, 12)),
        }));
        messages.push(json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": id, "type": "function", "function": {
                "name": "run",
                "arguments": json!({"command": format!("cargo test {} -- --nocapture", rng.pick(IDENTS)),
                    "timeout_s": 300}).to_string(),
            }}],
        }));
        messages.push(json!({
            "role": "tool",
            "tool_call_id": id,
            "content": logs(&mut rng, 15),
        }));
        messages.push(json!({
            "role": "assistant",
            "content": format!("The log shows the connection being reset while the {} is \
                still held. Change the function like this:\n\n{}",
                rng.pick(IDENTS), code(&mut rng, 8)),
        }));
    }
}

fn parse(body: &Bytes) -> ApiRequest {
    ApiRequest::parse(Endpoint::ChatCompletions, body.clone()).unwrap_or_else(|e| panic!("{e}"))
}

fn build(request: &ApiRequest) -> key::CacheKey {
    key::build(Scope::Client(CLIENT), PATH, request, "").unwrap_or_else(|e| panic!("{e}"))
}

fn cache_key(c: &mut Criterion) {
    let bodies = [
        ("2KB", Bytes::from_static(SMALL)),
        ("200KB", agent_body(200 * 1024)),
    ];
    for (name, body) in &bodies {
        eprintln!("cache_key/{name}: body of {} bytes", body.len());
        let request = parse(body);
        let mut group = c.benchmark_group(format!("cache_key/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse+key", |b| {
            b.iter(|| build(&parse(black_box(body))));
        });
        group.bench_function("parse", |b| b.iter(|| parse(black_box(body))));
        group.bench_function("key", |b| b.iter(|| build(black_box(&request))));
        group.finish();
    }
}

criterion_group!(benches, cache_key);
criterion_main!(benches);
