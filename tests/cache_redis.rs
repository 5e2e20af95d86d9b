//! The Redis tier end to end, with a real redis-server started on a free port.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Harness, http};
use sluice::mock::MockOptions;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"shared"}]}"#;

async fn send(url: &str, body: &str) -> (u16, String, String) {
    let response = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (outcome, tier) = (header("x-sluice-cache"), header("x-sluice-cache-tier"));
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    (status, outcome, tier)
}

fn keys(redis: &RedisServer) -> usize {
    redis
        .query::<Vec<String>>(&["KEYS", &format!("{}*", sluice::cache::REDIS_PREFIX)])
        .map_or(0, |k| k.len())
}

#[tokio::test]
async fn two_instances_share_answers_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let a = Harness::start_with(MockOptions::default(), |c| c.cache.redis_url = url.clone()).await;
    let mut config = common::config_for(&a.mock.base_url());
    config.cache.redis_url = url;
    let b = sluice::server::start(config).await.unwrap();

    assert_eq!(send(&a.url("/v1/chat/completions"), BODY).await.1, "miss");
    let landed = common::eventually(Duration::from_secs(10), || async { keys(&redis) == 1 }).await;
    assert!(landed, "the answer never reached Redis");
    let ttl: i64 = redis
        .query(&[
            "TTL",
            &redis
                .query::<Vec<String>>(&["KEYS", &format!("{}*", sluice::cache::REDIS_PREFIX)])
                .unwrap()[0],
        ])
        .unwrap();
    assert!(ttl > 3000 && ttl <= 3600, "ttl {ttl}");

    let (status, outcome, tier) = send(&format!("{}/chat/completions", b.base_url()), BODY).await;
    assert_eq!(
        (status, outcome.as_str(), tier.as_str()),
        (200, "hit", "redis")
    );
    // Now in the second instance's memory too.
    let (_, outcome, tier) = send(&format!("{}/chat/completions", b.base_url()), BODY).await;
    assert_eq!((outcome.as_str(), tier.as_str()), ("hit", "memory"));
    assert_eq!(a.mock.request_count(), 1);
}

#[tokio::test]
async fn redis_down_never_fails_or_holds_a_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.cache.redis_url = url.clone();
        c.cache.redis_timeout = Duration::from_millis(50);
    })
    .await;
    assert_eq!(send(&h.url("/v1/chat/completions"), BODY).await.0, 200);
    assert!(common::eventually(Duration::from_secs(10), || async { keys(&redis) == 1 }).await);

    let port = redis.stop();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"while down {i}"}}]}}"#
        );
        let started = Instant::now();
        let (status, outcome, _) = send(&h.url("/v1/chat/completions"), &body).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!((status, outcome.as_str()), (200, "miss"));
    }
    // Generous against scheduling noise, far below any connect or retry wait.
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?} on a dead Redis"
    );
    // Memory still serves what it has.
    assert_eq!(send(&h.url("/v1/chat/completions"), BODY).await.1, "hit");

    // Redis comes back on the same port: writes land again.
    let redis = RedisServer::start_on(port);
    let recovered = common::eventually(Duration::from_secs(60), || async {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"after {}"}}]}}"#,
            fastrand::u64(..)
        );
        send(&h.url("/v1/chat/completions"), &body).await;
        keys(&redis) > 0
    })
    .await;
    assert!(recovered, "sluice never wrote to the restarted Redis");
}

#[tokio::test]
async fn unreachable_redis_at_start_is_not_fatal() {
    let port = common::net::free_port();
    let h = Harness::start_with(MockOptions::default(), |c| {
        c.cache.redis_url = format!("redis://127.0.0.1:{port}");
    })
    .await;
    assert_eq!(send(&h.url("/v1/chat/completions"), BODY).await.1, "miss");
    assert_eq!(send(&h.url("/v1/chat/completions"), BODY).await.1, "hit");
}

#[tokio::test]
async fn redis_cluster_urls_work() {
    if !RedisServer::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_cluster_node(common::net::free_port(), dir.path()))
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    let ready = common::eventually(Duration::from_secs(20), || async {
        nodes.iter().all(|n| {
            n.query::<String>(&["CLUSTER", "INFO"])
                .is_some_and(|info| info.contains("cluster_state:ok"))
        })
    })
    .await;
    assert!(ready, "the cluster did not come up");

    let url = format!("redis+cluster://{}", addrs.join(","));
    let a = Harness::start_with(MockOptions::default(), |c| c.cache.redis_url = url.clone()).await;
    assert_eq!(send(&a.url("/v1/chat/completions"), BODY).await.1, "miss");
    let stored = common::eventually(Duration::from_secs(20), || async {
        nodes.iter().map(keys).sum::<usize>() == 1
    })
    .await;
    assert!(stored, "the answer never reached the cluster");
    let mut config = common::config_for(&a.mock.base_url());
    config.cache.redis_url = url;
    let b = sluice::server::start(config).await.unwrap();
    let found = common::eventually(Duration::from_secs(20), || async {
        let (_, outcome, tier) = send(&format!("{}/chat/completions", b.base_url()), BODY).await;
        outcome == "hit" && tier == "redis"
    })
    .await;
    assert!(
        found,
        "the second instance never read the answer from the cluster"
    );
    assert_eq!(a.mock.request_count(), 1);
}

/// The value of the one cache key in Redis.
fn stored(redis: &RedisServer) -> (String, Vec<u8>) {
    let key = redis
        .query::<Vec<String>>(&["KEYS", &format!("{}*", sluice::cache::REDIS_PREFIX)])
        .unwrap()
        .remove(0);
    let value: Vec<u8> = redis.query(&["GET", &key]).unwrap();
    (key, value)
}

/// A neighbour (or a bug) writes a stored entry's time as `u64::MAX`: the
/// replica reading it takes it for a miss, counts it, answers from the
/// upstream and overwrites it with the fresh answer.
#[tokio::test]
async fn an_entry_with_fields_out_of_range_is_a_counted_miss() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let a = Harness::start_with(MockOptions::default(), |c| c.cache.redis_url = url.clone()).await;
    assert_eq!(send(&a.url("/v1/chat/completions"), BODY).await.1, "miss");
    assert!(common::eventually(Duration::from_secs(10), || async { keys(&redis) == 1 }).await);

    // Bytes 2..10: `stored_at` (after the codec's and the format's first bytes).
    let (key, value) = stored(&redis);
    let mut conn = redis.raw().unwrap();
    let _: () = redis::cmd("SETRANGE")
        .arg(&key)
        .arg(2)
        .arg(&[0xffu8; 8][..])
        .query(&mut conn)
        .unwrap();
    assert_ne!(stored(&redis).1, value, "the value was not changed");

    // A second replica, with nothing in memory, reads the bad entry.
    let mut config = common::config_for(&a.mock.base_url());
    config.cache.redis_url = url;
    let b = sluice::server::start(config).await.unwrap();
    let b_chat = format!("{}/chat/completions", b.base_url());
    let before = common::metric(&a.url(""), "sluice_cache_invalid_entries_total").await;
    for _ in 0..2 {
        let (status, outcome, _) = send(&b_chat, BODY).await;
        assert_eq!(status, 200);
        if outcome == "hit" {
            break;
        }
        assert_eq!(outcome, "miss");
    }
    let after = common::metric(&a.url(""), "sluice_cache_invalid_entries_total").await;
    assert!(
        after.unwrap_or(0.0) > before.unwrap_or(0.0),
        "not counted: {before:?} -> {after:?}"
    );
    assert_eq!(a.mock.request_count(), 2, "the bad entry was served");
    // The fresh answer replaced it: a third replica hits in Redis.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            stored(&redis).1[2..10] != [0xff; 8]
        })
        .await,
        "the bad entry was not overwritten"
    );
    let mut config = common::config_for(&a.mock.base_url());
    config.cache.redis_url = redis.url();
    let c = sluice::server::start(config).await.unwrap();
    let (status, outcome, tier) = send(&format!("{}/chat/completions", c.base_url()), BODY).await;
    assert_eq!(
        (status, outcome.as_str(), tier.as_str()),
        (200, "hit", "redis")
    );
}
