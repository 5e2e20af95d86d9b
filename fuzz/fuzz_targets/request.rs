//! A request body, as a client could send it, through everything sluice does
//! with an understood request before forwarding it: the nesting scan and the
//! parse (ingress), the fields the layers read, the cache key, token
//! counting, pruning and compression.
//!
//! Input: one byte choosing the endpoint, then the body.

#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::cache::key::{self, Scope};
use sluice::compress::Compressor;
use sluice::config::{CompressConfig, CompressLevel, PruneConfig, TokensConfig};
use sluice::openai::request::nested_deeper_than;
use sluice::openai::{ApiRequest, Endpoint};
use sluice::prune::PruneLayer;
use sluice::tokens::Counter;

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
];

/// The largest `server.max_json_depth` allowed: every depth a configured
/// sluice can let through.
const MAX_DEPTH: usize = 128;

struct Layers {
    counter: Arc<Counter>,
    prune: PruneLayer,
    compress: Compressor,
}

/// Small budgets, so that pruning and head-and-tail cuts happen often.
static LAYERS: LazyLock<Layers> = LazyLock::new(|| {
    let counter = Arc::new(Counter::new(TokensConfig::default().fallback_encoding));
    let prune = PruneConfig {
        enabled: true,
        max_messages: 3,
        max_context_tokens: 40,
        ..PruneConfig::default()
    };
    let compress = CompressConfig {
        max_prompt_tokens: 24,
        ..CompressConfig::default()
    };
    Layers {
        prune: PruneLayer::new(&prune, counter.clone()),
        compress: Compressor::new(&compress, counter.clone()),
        counter,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(selector) % ENDPOINTS.len()];
    let deep = nested_deeper_than(body, MAX_DEPTH);
    let Ok(api) = ApiRequest::parse_within_depth(endpoint, Bytes::copy_from_slice(body), MAX_DEPTH)
    else {
        return;
    };
    assert!(!deep, "a body nested too deep was parsed");
    // What the layers read.
    let _ = (api.model(), api.stream(), api.body_len());
    assert_eq!(api.to_bytes(), body, "an unmodified request changed");
    for (name, raw) in api.fields() {
        assert!(
            serde_json::from_slice::<&serde_json::value::RawValue>(raw).is_ok(),
            "field {name:?} is not one JSON value"
        );
    }
    let _ = key::build(Scope::Global, "/v1/x?y=1", &api, "settings");
    let layers = &*LAYERS;
    let _ = sluice::tokens::prompt::request(&layers.counter, &api);
    let pruned = sluice::prune::run(&layers.prune, &api, None);
    let sent = pruned.pruned.unwrap_or(api);
    for level in [CompressLevel::Safe, CompressLevel::Aggressive] {
        if let Some(compressed) = layers.compress.run(&sent, level) {
            // What would be sent upstream is still one JSON object.
            let bytes = compressed.to_bytes();
            assert!(
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
                    .is_ok(),
                "compression made invalid JSON"
            );
        }
    }
});
