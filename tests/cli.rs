//! The command line: help, exit codes, config errors, check-config output.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::process::{Command, Output};

fn sluice(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).current_dir(std::env::temp_dir());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_command_answers_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["mock-upstream", "--help"],
        &["demo", "--help"],
        &["healthcheck", "--help"],
        &["usage", "--help"],
    ] {
        let output = sluice(args, &[]);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
    let top = sluice(&["--help"], &[]);
    let text = String::from_utf8_lossy(&top.stdout);
    for command in ["serve", "check-config", "mock-upstream", "usage"] {
        assert!(text.contains(command), "{command} missing from --help");
    }
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--bogus"][..],
        &["serve", "--listen"],
        &["mock-upstream", "--chunks", "many"],
        &["frobnicate"],
    ] {
        let output = sluice(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let output = sluice(&["serve", "--listen", "not-an-address"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--listen"), "{}", stderr(&output));
}

#[test]
fn config_errors_name_the_file_and_key_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nmax_concurrency = \"lots\"\n").unwrap();
    let path_str = path.to_str().unwrap();
    for args in [
        &["check-config", "--config", path_str][..],
        &["serve", "--config", path_str],
    ] {
        let output = sluice(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(path_str), "{err}");
        assert!(err.contains("server.max_concurrency"), "{err}");
    }

    std::fs::write(&path, "[cache]\nttl = \"1h\"\nbogus_key = 1\n").unwrap();
    let output = sluice(&["check-config", "--config", path_str], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cache.bogus_key"),
        "{}",
        stderr(&output)
    );

    let missing = dir.path().join("missing.toml");
    let output = sluice(
        &["check-config", "--config", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.toml"));

    let output = sluice(&["check-config"], &[("SLUICE_SERVER__LISTEN", "nope")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("SLUICE_SERVER__LISTEN"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        r#"
[[upstreams]]
name = "main"
base_url = "https://user:hunter2@llm.example.com/v1"
api_key_env = "TEST_UPSTREAM_KEY"
"#,
    )
    .unwrap();
    let output = sluice(
        &["check-config", "--config", path.to_str().unwrap()],
        &[
            ("TEST_UPSTREAM_KEY", "sk-very-secret"),
            (
                "SLUICE_CACHE__REDIS_URL",
                "redis://:redispass@127.0.0.1:6379/0",
            ),
            ("SLUICE_SERVER__MAX_CONCURRENCY", "77"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("max_concurrency = 77"), "{text}");
    assert!(text.contains("request_timeout = \"10m\""), "{text}");
    for secret in ["hunter2", "redispass", "sk-very-secret"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("TEST_UPSTREAM_KEY"), "{text}");
    // The printed config is itself a valid config.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, text.as_bytes()).unwrap();
    let again = sluice(
        &["check-config", "--config", printed.to_str().unwrap()],
        &[("TEST_UPSTREAM_KEY", "sk-very-secret")],
    );
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn check_config_reads_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.toml");
    let output = sluice(&["check-config", "--config", example], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn demo_shows_hits_coalescing_and_tokens_saved() {
    let output = sluice(&["demo"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let header = text.lines().next().unwrap_or_default();
    for column in ["request", "status", "cache", "prompt tokens", "ms"] {
        assert!(header.contains(column), "{column} missing:\n{text}");
    }
    let rows_with = |cache: &str| {
        text.lines()
            .filter(|l| l.split_whitespace().any(|w| w == cache))
            .count()
    };
    assert!(rows_with("hit") >= 1, "no hit row:\n{text}");
    assert!(rows_with("coalesced") >= 1, "no coalesced row:\n{text}");
    let tokens: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("prompt tokens "))
        .unwrap_or_else(|| panic!("no prompt tokens summary:\n{text}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        tokens.len() >= 2 && tokens[1] < tokens[0],
        "tokens sent not below tokens before:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("added latency")),
        "{text}"
    );
}

#[test]
fn healthcheck_exits_0_only_on_a_2xx_answer() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = sluice::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 1;
    config.upstreams[0].base_url = "http://127.0.0.1:9/v1".to_owned();
    config.upstreams[0].prewarm = 0;
    let running = runtime.block_on(sluice::server::start(config)).unwrap();
    let base = format!("http://{}", running.addr());

    let up = sluice(&["healthcheck", "--url", &format!("{base}/healthz")], &[]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));

    let missing = sluice(
        &["healthcheck", "--url", &format!("{base}/no-such-path")],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("404"), "{}", stderr(&missing));

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let refused = sluice(
        &["healthcheck", "--url", &format!("http://{closed}/healthz")],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("connection refused"), "{err}");

    // Connected but never answered: the 2 s timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let hung = sluice(
        &[
            "healthcheck",
            "--url",
            &format!("http://{}/healthz", silent.local_addr().unwrap()),
        ],
        &[],
    );
    assert_eq!(hung.status.code(), Some(1));
    assert!(
        stderr(&hung).contains("no answer within 2s"),
        "{}",
        stderr(&hung)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(silent);

    running.shutdown();
    runtime.block_on(running.wait());
}

#[test]
fn usage_without_a_ledger_or_with_bad_flags_exits_2() {
    let output = sluice(&["usage"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("[ledger] url"),
        "{}",
        stderr(&output)
    );
    let ledger = [("SLUICE_LEDGER__URL", "sqlite:///nonexistent-dir/l.db")];
    for args in [
        &["usage", "--group-by", "week"][..],
        &["usage", "--since", "yesterday-ish"],
    ] {
        let output = sluice(args, &ledger);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
