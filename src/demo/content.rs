//! What the demo sends: a long agent conversation, pasted logs and code.

use serde_json::{Value, json};

use super::*;

/// A coding agent's conversation: a task, then rounds of reading files and
/// running tools, each with a short remark, and a last question about an
/// early file. Old file contents and tool results are what pruning elides.
pub(crate) fn agent_conversation() -> Value {
    const FILES: [&str; 12] = [
        "src/cache/store.rs",
        "src/cache/key.rs",
        "src/upstream/pool.rs",
        "src/upstream/retry.rs",
        "src/upstream/route.rs",
        "src/server.rs",
        "src/stack.rs",
        "src/config/load.rs",
        "src/rate_limit/local.rs",
        "src/session/sessions.rs",
        "src/observe.rs",
        "src/edge/timeout.rs",
    ];
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful coding agent working in a Rust repository. Use the tools to read files and run tests before proposing changes."}),
        json!({"role": "user", "content": "The cache sometimes serves an entry after its TTL. Find out why and propose a fix."}),
    ];
    for (round, path) in FILES.iter().enumerate() {
        let id = format!("call_{round:02}");
        messages.push(
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": id, "type": "function",
                "function": {"name": "read_file", "arguments": json!({"path": path}).to_string()},
            }]}),
        );
        messages
            .push(json!({"role": "tool", "tool_call_id": id, "content": source_file(path, round)}));
        if round % 3 == 2 {
            let id = format!("call_{round:02}_test");
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": id, "type": "function",
                "function": {"name": "run", "arguments": "{\"cmd\":\"cargo test --lib cache\"}"},
            }]}));
            messages
                .push(json!({"role": "tool", "tool_call_id": id, "content": test_output(round)}));
        }
        messages.push(json!({"role": "assistant", "content": format!("Read {path}: nothing there compares the entry's age with its TTL yet.")}));
        if round % 4 == 3 {
            messages.push(
                json!({"role": "user", "content": "Keep going, but check the expiry path first."}),
            );
        }
    }
    messages.push(json!({"role": "user", "content": "Back to src/cache/store.rs: `store_lookup_3` still returns entries past their TTL. What should change there?"}));
    chat("gpt-4o", Value::Array(messages))
}

/// A plausible Rust source file of about 90 lines.
pub(crate) fn source_file(path: &str, seed: usize) -> String {
    let module = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".rs");
    let mut text = format!(
        "//! {module}: part of sluice.\n\nuse std::sync::Arc;\nuse std::time::{{Duration, Instant}};\n\n"
    );
    for i in 0..12 {
        let n = seed * 100 + i;
        let _ = write!(
            text,
            "/// Returns the {module} entry {n} for `key` when it is still usable.\n\
             pub fn {module}_lookup_{i}(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {{\n\
             \x20   let entry = self.entries.get(key)?;\n\
             \x20   if entry.stored_at + Duration::from_secs({n}) < now {{\n\
             \x20       return None;\n\
             \x20   }}\n\
             \x20   Some(entry.clone())\n\
             }}\n\n"
        );
    }
    text
}

/// `cargo test` output with a failure.
pub(crate) fn test_output(seed: usize) -> String {
    let mut text = String::from(
        "   Compiling sluice v0.1.0\n    Finished `test` profile\n     Running unittests src/lib.rs\n\nrunning 24 tests\n",
    );
    for i in 0..24 {
        let outcome = if i == seed % 24 { "FAILED" } else { "ok" };
        let _ = writeln!(
            text,
            "test cache::store::tests::entry_case_{i} ... {outcome}"
        );
    }
    let _ = write!(
        text,
        "\nfailures:\n\n---- cache::store::tests::entry_case_{} stdout ----\nassertion `left == right` failed: an expired entry was served\n  left: Some(Entry {{ age: 3601s }})\n right: None\n\ntest result: FAILED. 23 passed; 1 failed; 0 ignored\n",
        seed % 24
    );
    text
}

/// A user pasting a service's log (the same warning over and over) and the
/// code that writes it, heavily commented, and asking about both.
pub(crate) fn logs_and_code() -> Value {
    let mut text = String::from("Our worker keeps logging this after a deploy:\n\n```\n");
    text.push_str("2024-05-02T10:14:07Z INFO  worker: started, 8 threads\n");
    for _ in 0..60 {
        text.push_str("WARN  redis: connection refused (10.0.3.7:6379), retrying in 1s   \n");
    }
    text.push_str(
        "2024-05-02T10:15:08Z ERROR worker: giving up on redis, serving from memory only\n",
    );
    text.push_str("```\n\n\n\nHere is the code that connects:\n\n```python\n");
    text.push_str("# Connection handling for the worker's Redis client.\n");
    text.push_str("# We retry forever because Redis is optional: the worker\n");
    text.push_str("# keeps serving from memory while it is down.\n");
    text.push_str("import time\n\nimport redis\n\n\n");
    for i in 0..8 {
        let _ = write!(
            text,
            "# Step {i}: try the connection again.\n\
             # The delay doubles each time, up to a cap (see RETRY_CAP below).\n\
             def connect_{i}(url, delay=1.0):  # called from main()\n\
             \x20   # Build the client lazily.\n\
             \x20   client = redis.Redis.from_url(url)  # no I/O yet\n\
             \x20   while True:\n\
             \x20       try:\n\
             \x20           client.ping()  # raises when Redis is down\n\
             \x20           return client\n\
             \x20       except redis.ConnectionError:\n\
             \x20           # Log and wait before the next try.\n\
             \x20           time.sleep(delay)\n\n\n"
        );
    }
    text.push_str("```\n\nWhy does it never reconnect once Redis is back?");
    user(&text)
}
