//! Tests of the Redis tier against a real `redis-server` started per test on a
//! free port (never the Redis on 6379).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on setup errors")]

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::codec::{self, COMPRESS_OVER};
use super::{RedisOptions, RedisTier, RedisTierError, Target};

#[path = "../../../tests/common/net.rs"]
mod net;
#[path = "../../../tests/common/redis.rs"]
#[allow(
    dead_code,
    reason = "shared with the integration tests, which use the rest of it"
)]
mod redis_server;

use net::free_port;
use redis_server::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(10);

fn options(url: String, queue: usize) -> RedisOptions {
    RedisOptions {
        url,
        timeout: TIMEOUT,
        prefix: "sluice:test:".into(),
        queue,
    }
}

fn fast_breaker() -> BreakerConfig {
    BreakerConfig {
        open_min: Duration::from_millis(50),
        open_max: Duration::from_millis(400),
        ..BreakerConfig::default()
    }
}

async fn wait_closed(tier: &RedisTier) {
    let deadline = Instant::now() + DEADLINE;
    while tier.breaker_state() != BreakerState::Closed {
        assert!(Instant::now() < deadline, "breaker did not close");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `get` until it returns a value.
async fn wait_value(tier: &RedisTier, key: &str) -> Bytes {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(value)) = tier.get(key).await {
            return value;
        }
        assert!(Instant::now() < deadline, "{key} never became readable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn put_then_get_with_prefix_and_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = RedisTier::start(options(server.url(), 100)).unwrap();
    wait_closed(&tier).await;

    assert_eq!(tier.get("absent").await.unwrap(), None);

    tier.put(
        "answer".into(),
        Bytes::from_static(b"{\"ok\":1}"),
        Duration::from_secs(60),
    );
    assert_eq!(&wait_value(&tier, "answer").await[..], b"{\"ok\":1}");

    let mut raw = server.raw().unwrap();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("sluice:test:answer")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, b"\0{\"ok\":1}", "prefixed key, raw header");
    let ttl: i64 = redis::cmd("TTL")
        .arg("sluice:test:answer")
        .query(&mut raw)
        .unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    // A sub-second TTL is stored as the one-second minimum.
    tier.put(
        "brief".into(),
        Bytes::from_static(b"x"),
        Duration::from_millis(10),
    );
    wait_value(&tier, "brief").await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("sluice:test:brief")
        .query(&mut raw)
        .unwrap();
    assert!((1..=1000).contains(&ttl), "pttl {ttl}");

    tier.flush(Duration::from_secs(1)).await;
    assert_eq!(tier.stats().writes, 2);
}

#[tokio::test]
async fn large_values_are_compressed_and_round_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = RedisTier::start(options(server.url(), 100)).unwrap();
    wait_closed(&tier).await;

    let text = "{\"role\":\"assistant\",\"content\":\"the same words again\"}".repeat(2000);
    let noise: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
        .take(8192)
        .collect();
    tier.put(
        "text".into(),
        Bytes::from(text.clone()),
        Duration::from_secs(60),
    );
    tier.put(
        "noise".into(),
        Bytes::from(noise.clone()),
        Duration::from_secs(60),
    );
    assert_eq!(wait_value(&tier, "text").await, text.as_bytes());
    assert_eq!(wait_value(&tier, "noise").await, noise);

    let mut raw = server.raw().unwrap();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("sluice:test:text")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored[0], 1, "compressed");
    assert!(stored.len() < text.len() / 10, "{} bytes", stored.len());
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("sluice:test:noise")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored[0], 0, "incompressible values stay raw");

    // Values sluice cannot read are misses.
    for junk in [&b""[..], b"\x07abc", b"\x01\xff\xff\xff\x7fxx"] {
        let () = redis::cmd("SET")
            .arg("sluice:test:junk")
            .arg(junk)
            .query(&mut raw)
            .unwrap();
        assert_eq!(tier.get("junk").await.unwrap(), None);
    }
}

#[tokio::test]
async fn survives_redis_dying_and_recovers_when_it_returns() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = RedisTier::start_with(options(server.url(), 100), fast_breaker()).unwrap();
    wait_closed(&tier).await;
    tier.put(
        "before".into(),
        Bytes::from_static(b"1"),
        Duration::from_secs(60),
    );
    wait_value(&tier, "before").await;

    let port = server.stop();

    // Every lookup fails fast; once the breaker is open, without any wait.
    for _ in 0..10 {
        let started = Instant::now();
        let result = tier.get("before").await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < TIMEOUT * 10, "{:?}", started.elapsed());
    }
    assert_ne!(tier.breaker_state(), BreakerState::Closed);
    let started = Instant::now();
    let result = tier.get("before").await;
    assert!(
        matches!(result, Err(RedisTierError::Unavailable)),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    for i in 0..1000 {
        tier.put(
            format!("during-{i}"),
            Bytes::from_static(b"x"),
            Duration::from_secs(60),
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert!(tier.stats().dropped_breaker_open >= 1000);

    let _server = RedisServer::start_on(port);
    wait_closed(&tier).await;
    tier.put(
        "after".into(),
        Bytes::from_static(b"2"),
        Duration::from_secs(60),
    );
    assert_eq!(&wait_value(&tier, "after").await[..], b"2");
}

#[tokio::test]
async fn a_stuck_redis_trips_the_breaker_and_is_used_again_once_it_answers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = RedisTier::start_with(options(server.url(), 100), fast_breaker()).unwrap();
    wait_closed(&tier).await;

    // Stopped, Redis still accepts connections but never answers: lookups
    // time out until the breaker opens, and probes keep it open.
    server.signal("-STOP");
    let deadline = Instant::now() + DEADLINE;
    while tier.breaker_state() == BreakerState::Closed {
        assert!(Instant::now() < deadline, "breaker never opened");
        let started = Instant::now();
        let result = tier.get("k").await;
        assert!(matches!(result, Err(RedisTierError::Timeout)), "{result:?}");
        assert!(started.elapsed() < TIMEOUT * 10, "{:?}", started.elapsed());
    }
    assert!(matches!(
        tier.get("k").await,
        Err(RedisTierError::Unavailable)
    ));

    server.signal("-CONT");
    wait_closed(&tier).await;
    tier.put(
        "k".into(),
        Bytes::from_static(b"v"),
        Duration::from_secs(60),
    );
    assert_eq!(&wait_value(&tier, "k").await[..], b"v");
}

#[tokio::test]
async fn unreachable_redis_does_not_hold_up_start_or_lookups() {
    let port = free_port();
    let started = Instant::now();
    let tier = RedisTier::start(options(format!("redis://127.0.0.1:{port}"), 100)).unwrap();
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());

    for _ in 0..3 {
        let started = Instant::now();
        let result = tier.get("anything").await;
        assert!(
            matches!(result, Err(RedisTierError::Unavailable)),
            "{result:?}"
        );
        assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    }
    tier.put("k".into(), Bytes::from_static(b"v"), Duration::from_secs(1));
    let started = Instant::now();
    tier.flush(Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(tier.stats().dropped_breaker_open, 1);
    assert_ne!(tier.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = RedisTier::start(options(server.url(), 2)).unwrap();
    wait_closed(&tier).await;

    // A stopped Redis accepts writes into its socket but never answers, so
    // the writer is stuck on its first batch and the queue fills.
    server.signal("-STOP");
    let started = Instant::now();
    for i in 0..1000 {
        tier.put(
            format!("k{i}"),
            Bytes::from_static(b"v"),
            Duration::from_secs(60),
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    let dropped = tier.stats().dropped_queue_full;
    // At most the queue and the writer's batch in flight (two if the stop
    // signal landed after a first batch was answered) were accepted.
    assert!(dropped >= 1000 - 2 - 2 * 64, "dropped {dropped}");

    tier.flush(Duration::from_secs(2)).await;
    server.signal("-CONT");
}

#[test]
fn codec_round_trips_and_compresses_only_when_it_helps() {
    let small = b"{\"id\":1}";
    let stored = codec::encode(small);
    assert_eq!(stored[0], 0);
    assert_eq!(codec::decode(Bytes::from(stored)).unwrap(), &small[..]);

    let big = vec![b'a'; COMPRESS_OVER * 8];
    let stored = codec::encode(&big);
    assert_eq!(stored[0], 1);
    assert!(stored.len() < big.len());
    assert_eq!(codec::decode(Bytes::from(stored)).unwrap(), big);

    let at_threshold = vec![b'a'; COMPRESS_OVER];
    assert_eq!(codec::encode(&at_threshold)[0], 0);

    assert_eq!(codec::decode(Bytes::new()), None);
    assert_eq!(codec::decode(Bytes::from_static(b"\x02x")), None);
    assert_eq!(codec::decode(Bytes::from_static(b"\x01\x00")), None);
    // A length header far beyond what LZ4 can expand to is refused.
    assert_eq!(
        codec::decode(Bytes::from_static(b"\x01\xff\xff\xff\xff\x00")),
        None
    );
}

#[test]
fn breaker_opens_on_consecutive_failures_and_on_a_failure_ratio() {
    let breaker = Breaker::new(BreakerConfig::default());
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "starts open until a probe"
    );
    breaker.close();
    breaker.record(false);
    breaker.record(false);
    breaker.record(true);
    breaker.record(false);
    breaker.record(false);
    assert!(breaker.allows(), "a success resets the consecutive count");
    breaker.record(false);
    assert_eq!(breaker.state(), BreakerState::Open);

    let breaker = Breaker::new(BreakerConfig {
        window: Duration::from_secs(60),
        ..BreakerConfig::default()
    });
    breaker.close();
    for _ in 0..15 {
        breaker.record(true);
        breaker.record(false);
        breaker.record(false);
        breaker.record(true);
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "half of the window failed"
    );

    breaker.half_open();
    assert!(!breaker.allows());
    breaker.close();
    assert!(breaker.allows());
}

#[test]
fn urls_are_checked_at_start() {
    let parse = |url: &str| Target::parse(url, TIMEOUT);
    assert!(matches!(
        parse("redis://127.0.0.1:6390"),
        Ok(Target::Single(_))
    ));
    assert!(matches!(
        parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000"),
        Ok(Target::Cluster(_))
    ));
    assert!(matches!(
        parse("redis://10.0.0.1:7000, redis://10.0.0.2:7000"),
        Ok(Target::Cluster(_))
    ));
    for bad in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "redis+cluster://",
        "redis://a:1,",
    ] {
        assert!(
            matches!(parse(bad), Err(RedisTierError::InvalidUrl(_))),
            "{bad:?} accepted"
        );
    }
}
