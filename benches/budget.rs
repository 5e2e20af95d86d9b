//! Pruning and compression speed on the evaluation corpus, per 10k tokens
//! of input (target: under 2 ms).
//!
//! `cargo bench --bench budget`. The counts are cold: each iteration uses a
//! fresh token count cache, as for a conversation sluice has not seen.

#![expect(clippy::unwrap_used, reason = "benchmark harness")]

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use sluice::compress::Compressor;
use sluice::config::{CompressConfig, CompressLevel, PruneConfig};
use sluice::openai::{ApiRequest, Endpoint};
use sluice::prune::{PruneLayer, run};
use sluice::tokens::{Counter, Encoding, prompt};

fn load(name: &str) -> (Endpoint, Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/corpus/conversations")
        .join(format!("{name}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let endpoint = if v["endpoint"] == "responses" {
        Endpoint::Responses
    } else {
        Endpoint::ChatCompletions
    };
    (endpoint, v["request"].clone())
}

fn budget(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");
    group.sample_size(20);
    for name in [
        "agent-01-cache-store",
        "agent-05-request-id",
        "agent-08-config-audit",
        "docqa-01-tokio",
    ] {
        let (endpoint, body) = load(name);
        let api = ApiRequest::parse(endpoint, serde_json::to_vec(&body).unwrap().into()).unwrap();
        let tokens = prompt::request(&Counter::new(Encoding::O200kBase), &api);
        // Throughput in units of 10k tokens: "elements/s" reads as 10k-token blocks per second.
        group.throughput(Throughput::Elements(tokens.div_ceil(10_000)));
        group.bench_function(format!("count/{name}/{tokens}"), |b| {
            b.iter(|| prompt::request(&Counter::new(Encoding::O200kBase), &api))
        });
        group.bench_function(format!("prune/{name}/{tokens}"), |b| {
            b.iter(|| {
                let counter = Arc::new(Counter::new(Encoding::O200kBase));
                let config = PruneConfig {
                    enabled: true,
                    ..PruneConfig::default()
                };
                run(&PruneLayer::new(&config, counter), &api, None)
            })
        });
        for level in [CompressLevel::Safe, CompressLevel::Aggressive] {
            group.bench_function(format!("compress-{level:?}/{name}/{tokens}"), |b| {
                b.iter(|| {
                    let counter = Arc::new(Counter::new(Encoding::O200kBase));
                    Compressor::new(&CompressConfig::default(), counter).run(&api, level)
                })
            });
        }
        group.bench_function(format!("warm-prune/{name}/{tokens}"), |b| {
            let counter = Arc::new(Counter::new(Encoding::O200kBase));
            let layer = PruneLayer::new(
                &PruneConfig {
                    enabled: true,
                    ..PruneConfig::default()
                },
                counter,
            );
            b.iter(|| run(&layer, &api, None))
        });
    }
    group.finish();
}

criterion_group!(benches, budget);
criterion_main!(benches);
