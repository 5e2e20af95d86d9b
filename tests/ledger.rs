//! The usage ledger end to end: sluice in front of the mock upstream,
//! writing one record per request to a real SQLite file, read back with a
//! database client of its own.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{chat, chat_stream, http};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice::config::Config;
use sluice::mock::{MockOptions, MockUpstream};
use sqlx::Row;

/// One row of `usage_records`, as the test reads it.
#[derive(Debug, Clone)]
struct Stored {
    status: Option<i64>,
    key: String,
    model: Option<String>,
    prompt: i64,
    completion: i64,
    source: Option<String>,
    cache: Option<String>,
    saved: i64,
    end: String,
    endpoint: String,
}

async fn rows(path: &std::path::Path) -> HashMap<String, Stored> {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT request_id, status, key, model, prompt_tokens, completion_tokens, usage_source, \
         cache, tokens_saved, end_reason, endpoint FROM usage_records",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_id = HashMap::new();
    for row in rows {
        let id: String = row.get("request_id");
        let stored = Stored {
            status: row.get("status"),
            key: row.get("key"),
            model: row.get("model"),
            prompt: row.get("prompt_tokens"),
            completion: row.get("completion_tokens"),
            source: row.get("usage_source"),
            cache: row.get("cache"),
            saved: row.get("tokens_saved"),
            end: row.get("end_reason"),
            endpoint: row.get("endpoint"),
        };
        assert!(
            by_id.insert(id.clone(), stored).is_none(),
            "two rows for {id}"
        );
    }
    pool.close().await;
    by_id
}

fn ledger_config(mock: &MockUpstream, url: String) -> Config {
    let mut config = common::config_for(&mock.base_url());
    config.ledger.url = url;
    config.ledger.flush_interval = Duration::from_millis(20);
    config
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The usage in a chat answer's body, or in a stream's last usage chunk.
fn usage_of(body: &str) -> Option<(i64, i64)> {
    let read = |v: &Value| {
        Some((
            v["usage"]["prompt_tokens"].as_i64()?,
            v["usage"]["completion_tokens"].as_i64()?,
        ))
    };
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return read(&value);
    }
    common::sse_data(body)
        .iter()
        .rev()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| read(&v))
}

/// A mixed load writes exactly one row per request, with the upstream's
/// usage (or sluice's count of a stream that reported none), cache hits
/// with nothing spent and their saving, and how each request ended.
#[tokio::test]
async fn every_request_leaves_one_record_in_sqlite() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let config = ledger_config(&mock, format!("sqlite://{}", path.display()));
    let sluice = sluice::server::start(config).await.unwrap();
    let base = format!("http://{}", sluice.addr());
    let chat_url = format!("{base}/v1/chat/completions");
    // Request id, case, the usage the client saw.
    type Case = (String, &'static str, Option<(i64, i64)>);
    let mut expected: Vec<Case> = Vec::new();

    // Plain, then the same again (a hit).
    for case in ["plain", "hit"] {
        let response = http()
            .post(&chat_url)
            .json(&chat("ledger one"))
            .send()
            .await
            .unwrap();
        let id = request_id(&response);
        let body = response.text().await.unwrap();
        expected.push((id, case, usage_of(&body)));
    }
    // Streamed with usage asked for, and without (sluice counts it).
    let mut with_usage = chat_stream("ledger streamed");
    with_usage["stream_options"] = json!({"include_usage": true});
    for (case, body) in [
        ("stream_usage", with_usage),
        ("stream_counted", chat_stream("ledger counted")),
    ] {
        let response = http().post(&chat_url).json(&body).send().await.unwrap();
        let id = request_id(&response);
        let body = response.text().await.unwrap();
        expected.push((id, case, usage_of(&body)));
    }
    // Embeddings, an error the upstream answers, a path passed through.
    let response = http()
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}))
        .send()
        .await
        .unwrap();
    expected.push((request_id(&response), "embeddings", None));
    let response = http()
        .post(&chat_url)
        .header("x-mock-status", "400")
        .json(&chat("ledger refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    expected.push((request_id(&response), "refused", None));
    let response = http()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    expected.push((request_id(&response), "models", None));
    // A stream the client leaves after its first chunk.
    let response = http()
        .post(&chat_url)
        .header("x-mock-chunk-delay-ms", "50")
        .json(&chat_stream("ledger abandoned"))
        .send()
        .await
        .unwrap();
    let id = request_id(&response);
    let mut stream = response.bytes_stream();
    assert!(stream.next().await.is_some());
    drop(stream);
    expected.push((id, "abandoned", None));

    // Shutdown flushes the queue.
    sluice.shutdown();
    sluice.wait().await;
    let rows = rows(&path).await;
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    let plain_total = expected[0].2.map_or(0, |(p, c)| p + c);
    for (id, case, usage) in &expected {
        let row = rows.get(id).unwrap_or_else(|| panic!("no row for {case}"));
        assert!(
            row.key.starts_with("client-") || row.key == "anonymous",
            "{row:?}"
        );
        match *case {
            "plain" | "stream_usage" => {
                let (prompt, completion) = usage.unwrap();
                assert_eq!((row.prompt, row.completion), (prompt, completion), "{case}");
                assert_eq!(row.source.as_deref(), Some("upstream"), "{case}");
                assert_eq!(row.end, "complete");
                assert_eq!(row.model.as_deref(), Some("gpt-4o-mini"));
            }
            "hit" => {
                assert_eq!((row.prompt, row.completion), (0, 0));
                assert_eq!(row.cache.as_deref(), Some("hit"));
                assert_eq!(row.saved, plain_total);
            }
            "stream_counted" => {
                assert_eq!(row.source.as_deref(), Some("counted"));
                assert!(row.completion > 0, "{row:?}");
            }
            "embeddings" => {
                assert_eq!(row.endpoint, "embeddings");
                assert!(row.prompt > 0, "{row:?}");
            }
            "refused" => {
                assert_eq!(row.status, Some(400));
                assert_eq!(row.end, "refused");
            }
            "models" => assert_eq!(row.status, Some(200)),
            // One row, marked as left; its usage is not counted yet (see
            // docs/usage.md).
            "abandoned" => {
                assert_eq!(row.status, Some(200));
                assert_eq!(row.end, "client_gone");
            }
            _ => unreachable!(),
        }
    }
    // `sluice usage` sums the same rows.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["usage", "--since", "1h", "--group-by", "model,endpoint"])
        .env("SLUICE_LEDGER__URL", format!("sqlite://{}", path.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("model") && lines[0].contains("requests"),
        "{table}"
    );
    let chat_line = lines
        .iter()
        .find(|l| l.starts_with("gpt-4o-mini") && l.contains("chat_completions"))
        .unwrap_or_else(|| panic!("{table}"));
    let chats = rows
        .values()
        .filter(|r| r.model.as_deref() == Some("gpt-4o-mini") && r.endpoint == "chat_completions")
        .count();
    let requests: usize = chat_line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(requests, chats, "{table}");
}

/// A database that cannot be reached never fails or holds a request: the
/// records wait in the queue up to its bound, the rest are dropped and
/// counted; once the database can be reached, writing resumes.
#[tokio::test]
async fn an_unreachable_database_drops_rows_and_writing_resumes() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A file in a directory that does not exist yet: cannot be opened.
    let missing = dir.path().join("later");
    let path = missing.join("ledger.db");
    let mut config = ledger_config(&mock, format!("sqlite://{}", path.display()));
    config.ledger.queue_size = 4;
    config.ledger.flush_interval = Duration::from_millis(1);
    config.cache.enabled = false;
    let sluice = sluice::server::start(config).await.unwrap();
    let chat_url = format!("{}/chat/completions", sluice.base_url());
    for i in 0..30 {
        let response = http()
            .post(&chat_url)
            .json(&chat(&format!("while down {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let base = format!("http://{}", sluice.addr());
    let dropped = common::eventually(Duration::from_secs(5), || async {
        common::metric(&base, "sluice_ledger_rows_total{outcome=\"dropped\"}")
            .await
            .unwrap_or(0.0)
            >= 10.0
    })
    .await;
    assert!(dropped, "rows past the queue were not dropped and counted");
    // The database becomes reachable: what waited, and new rows, land.
    std::fs::create_dir_all(&missing).unwrap();
    for i in 0..3 {
        http()
            .post(&chat_url)
            .json(&chat(&format!("after {i}")))
            .send()
            .await
            .unwrap();
    }
    sluice.shutdown();
    sluice.wait().await;
    let rows = rows(&path).await;
    // The three made after it came back, and some that waited; not all.
    assert!(
        rows.len() >= 3 && rows.len() < 33,
        "{} rows written",
        rows.len()
    );
}

async fn postgres_count(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM usage_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    count
}

async fn send_chats(sluice: &sluice::server::Running, prefix: &str, n: usize) -> Vec<String> {
    let url = format!("{}/chat/completions", sluice.base_url());
    let mut ids = Vec::new();
    for i in 0..n {
        let response = http()
            .post(&url)
            .json(&chat(&format!("{prefix} {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(request_id(&response));
    }
    ids
}

/// Two replicas share one Postgres ledger: every request of either has its
/// one row.
#[tokio::test]
async fn two_replicas_write_to_one_postgres() {
    let Some(postgres) = common::postgres::PostgresServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let a = sluice::server::start(ledger_config(&mock, postgres.url()))
        .await
        .unwrap();
    let b = sluice::server::start(ledger_config(&mock, postgres.url()))
        .await
        .unwrap();
    let mut ids = send_chats(&a, "replica a", 6).await;
    ids.extend(send_chats(&b, "replica b", 6).await);
    for sluice in [a, b] {
        sluice.shutdown();
        sluice.wait().await;
    }
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let stored: Vec<(String,)> = sqlx::query_as("SELECT request_id FROM usage_records")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut stored: Vec<String> = stored.into_iter().map(|(id,)| id).collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
}

/// Postgres stopped under load: no request fails; the records wait in the
/// queue and land once it is back, without a restart of sluice.
#[tokio::test]
async fn postgres_stopped_and_started_again_loses_nothing_queued() {
    let Some(mut postgres) = common::postgres::PostgresServer::start() else {
        return;
    };
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let sluice = sluice::server::start(ledger_config(&mock, postgres.url()))
        .await
        .unwrap();
    send_chats(&sluice, "before", 5).await;
    let url = postgres.url();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            postgres_count(&url).await == 5
        })
        .await
    );
    postgres.stop();
    send_chats(&sluice, "while stopped", 5).await;
    postgres.start_again();
    send_chats(&sluice, "after", 3).await;
    sluice.shutdown();
    sluice.wait().await;
    assert_eq!(postgres_count(&url).await, 13);
}
