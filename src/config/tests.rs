#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;

use super::*;

/// The documented example, which must describe exactly the built-in defaults.
const EXAMPLE: &str = include_str!("../../config/sluice.toml");

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A config file in a fresh temporary directory.
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl File {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }

    fn load(&self, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_with_env(Some(&self.path), env(vars))
    }

    /// The error loading this file gives, as displayed.
    fn error(&self, vars: &[(&str, &str)]) -> String {
        self.load(vars).unwrap_err().to_string()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

fn load_toml(text: &str) -> Config {
    File::new(text).load(&[]).unwrap()
}

fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    // An empty file, not `None`: the working directory may hold a config/sluice.toml.
    File::new("").load(vars)
}

#[test]
fn defaults_match_the_spec_table() {
    let c = Config::default();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.max_body_size, ByteSize::mib(32));
    assert_eq!(c.server.request_timeout, Duration::from_secs(600));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.max_concurrency, 4096);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(c.server.max_headers, 100);
    assert_eq!(c.server.max_header_size, ByteSize::kib(64));
    assert_eq!(c.server.max_uri_length, ByteSize::kib(8));
    assert_eq!(c.server.max_json_depth, 64);

    assert_eq!(c.upstreams.len(), 1);
    let u = &c.upstreams[0];
    assert_eq!(u.name, "openai");
    assert_eq!(u.base_url, "https://api.openai.com/v1");
    assert_eq!(u.models, ["*"]);
    assert!(u.api_key_env.is_none() && u.api_key.is_none());
    assert_eq!(u.weight, 1);
    assert_eq!(u.timeout, Duration::from_secs(600));
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!((u.pool_max_idle, u.prewarm), (64, 2));

    assert_eq!(c.retry.max_retries, 2);
    assert_eq!(c.retry.base_delay, Duration::from_millis(200));
    assert_eq!(c.retry.max_delay, Duration::from_secs(10));
    assert_eq!(c.retry.retry_on, [429, 500, 502, 503, 504]);
    assert!((c.retry.budget - 0.2).abs() < f64::EPSILON);
    assert!((c.breaker.failure_ratio - 0.5).abs() < f64::EPSILON);
    assert_eq!(c.breaker.min_requests, 5);
    assert_eq!(c.breaker.window, Duration::from_secs(10));
    assert_eq!(c.breaker.cooldown, Duration::from_secs(30));
    assert_eq!(
        (u.first_byte_timeout, u.idle_timeout),
        (Duration::from_secs(120), Duration::from_secs(120))
    );

    assert!(c.cache.enabled);
    assert_eq!(c.cache.ttl, Duration::from_secs(3600));
    assert_eq!(c.cache.memory_max_size, ByteSize::mib(256));
    assert_eq!(c.cache.redis_url, "");
    assert_eq!(c.cache.scope, CacheScope::Key);
    assert!(!c.cache.deterministic_only);
    assert_eq!(c.cache.redis_timeout, Duration::from_millis(50));

    assert!(!c.prune.enabled);
    assert_eq!(c.prune.max_messages, 5);
    assert_eq!(c.prune.max_context_tokens, 4000);
    assert_eq!(c.prune.keep_file_content_turns, 1);
    assert!(!c.prune.prefix_stable);
    assert_eq!(c.prune.cut_depth, 0.5);

    assert_eq!(c.compress.level, CompressLevel::Safe);
    assert_eq!(c.compress.max_prompt_tokens, 12000);
    assert!((c.compress.head_ratio - 0.6).abs() < f64::EPSILON);

    assert!(c.rate_limit.requests_per_minute.is_none());
    assert!(c.rate_limit.tokens_per_minute.is_none());

    assert_eq!(c.sessions.header, "x-session-id");
    assert_eq!(c.sessions.max_concurrent, 1);
    assert_eq!(c.sessions.idle_timeout, Duration::from_secs(300));

    assert!(c.auth.client_keys_env.is_none());
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);

    c.validate().unwrap();
}

#[test]
fn no_file_and_empty_file_give_the_defaults() {
    let defaults = Config::default().to_masked_toml();
    // Without a path: config/sluice.toml if the working directory has one (the example,
    // which equals the defaults), else the defaults.
    let loaded = Config::load_with_env(None, env(&[])).unwrap();
    assert_eq!(loaded.to_masked_toml(), defaults);
    assert_eq!(load_toml("").to_masked_toml(), defaults);
}

#[test]
fn the_example_file_is_exactly_the_defaults() {
    let example = load_toml(EXAMPLE);
    assert_eq!(example.to_masked_toml(), Config::default().to_masked_toml());
}

#[test]
fn the_example_file_shows_every_key() {
    let rendered = Config::default().to_masked_toml();
    for line in rendered.lines() {
        let key = line
            .trim_start_matches("# ")
            .split([' ', '='])
            .next()
            .unwrap();
        if key.is_empty() || line.starts_with("# Effective") {
            continue;
        }
        assert!(
            EXAMPLE.contains(key),
            "config/sluice.toml does not mention {key}"
        );
    }
}

#[test]
fn file_values_override_defaults() {
    let c = load_toml(
        r#"
        [server]
        listen = "0.0.0.0:9090"
        max_body_size = "1MiB"
        request_timeout = "90s"

        [[upstreams]]
        name = "local"
        base_url = "http://127.0.0.1:8000/v1"
        models = ["llama-*", "qwen*"]

        [[upstreams]]
        name = "openai"
        base_url = "https://api.openai.com/v1"
        weight = 3
        timeout = "2m"

        [retry]
        retry_on = [503]
        budget = 0.5

        [cache]
        scope = "global"
        memory_max_size = 1048576

        [rate_limit]
        requests_per_minute = 60

        [compress]
        level = "aggressive"

        [log]
        format = "json"
        level = "info,sluice=debug"
        "#,
    );
    assert_eq!(c.server.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(c.server.max_body_size, ByteSize::mib(1));
    assert_eq!(c.server.request_timeout, Duration::from_secs(90));
    assert_eq!(
        c.server.max_concurrency, 4096,
        "unset keys keep their default"
    );
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.upstreams[0].models, ["llama-*", "qwen*"]);
    assert_eq!(
        c.upstreams[0].weight, 1,
        "unset upstream keys keep their default"
    );
    assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstreams[1].weight, 3);
    assert_eq!(c.upstreams[1].timeout, Duration::from_secs(120));
    assert_eq!(c.upstreams[1].models, ["*"]);
    assert_eq!(c.retry.retry_on, [503]);
    assert_eq!(c.retry.max_retries, 2);
    assert_eq!(c.cache.scope, CacheScope::Global);
    assert_eq!(c.cache.memory_max_size, ByteSize::mib(1));
    assert_eq!(c.rate_limit.requests_per_minute, Some(60));
    assert_eq!(c.compress.level, CompressLevel::Aggressive);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "info,sluice=debug");
}

#[test]
fn env_overrides_defaults_and_file() {
    let file = File::new("[server]\nlisten = \"127.0.0.1:1111\"\nmax_concurrency = 10\n");
    let c = file
        .load(&[
            ("SLUICE_SERVER__LISTEN", "0.0.0.0:8080"),
            ("SLUICE_SERVER__REQUEST_TIMEOUT", "45s"),
            ("SLUICE_RETRY__RETRY_ON", "[429,503]"),
            ("SLUICE_RETRY__BUDGET", "0.5"),
            ("SLUICE_CACHE__REDIS_URL", "redis://:pw@cache:6379/0"),
            ("SLUICE_CACHE__ENABLED", "false"),
            ("SLUICE_CACHE__SCOPE", "global"),
            ("SLUICE_LOG__LEVEL", "info,hyper=warn"),
            ("SLUICE_RATE_LIMIT__TOKENS_PER_MINUTE", "1000"),
            ("SLUICE_SESSIONS__HEADER", "\"123\""),
            ("UNRELATED", "x"),
        ])
        .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.server.max_concurrency, 10, "file value kept");
    assert_eq!(c.server.request_timeout, Duration::from_secs(45));
    assert_eq!(c.retry.retry_on, [429, 503]);
    assert!((c.retry.budget - 0.5).abs() < f64::EPSILON);
    assert_eq!(c.cache.redis_url, "redis://:pw@cache:6379/0");
    assert!(!c.cache.enabled);
    assert_eq!(c.cache.scope, CacheScope::Global);
    assert_eq!(c.log.level, "info,hyper=warn");
    assert_eq!(c.rate_limit.tokens_per_minute, Some(1000));
    assert_eq!(c.sessions.header, "123", "quoted digits stay a string");
}

#[test]
fn env_indexes_into_upstreams() {
    let c = load_env(&[("SLUICE_UPSTREAMS__0__BASE_URL", "http://127.0.0.1:9000/v1")]).unwrap();
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(
        c.upstreams[0].name, "openai",
        "other keys of the item are kept"
    );
    assert_eq!(c.upstreams[0].base_url, "http://127.0.0.1:9000/v1");

    let file = File::new(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"http://a/v1\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"http://b/v1\"\nweight = 2\n",
    );
    let c = file
        .load(&[
            ("SLUICE_UPSTREAMS__1__WEIGHT", "5"),
            ("SLUICE_UPSTREAMS__1__MODELS", "[\"gpt-*\"]"),
            ("SLUICE_UPSTREAMS__2__NAME", "c"),
            ("SLUICE_UPSTREAMS__2__BASE_URL", "https://c.example/v1"),
        ])
        .unwrap();
    assert_eq!(
        c.upstreams.len(),
        3,
        "index one past the end adds an upstream"
    );
    assert_eq!(
        (c.upstreams[1].name.as_str(), c.upstreams[1].weight),
        ("b", 5)
    );
    assert_eq!(c.upstreams[1].models, ["gpt-*"]);
    assert_eq!(c.upstreams[2].name, "c");
    assert_eq!(c.upstreams[2].base_url, "https://c.example/v1");
    assert_eq!(c.upstreams[2].prewarm, 2);
}

#[test]
fn env_upstream_errors_name_the_variable() {
    let err = load_env(&[("SLUICE_UPSTREAMS__3__NAME", "x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SLUICE_UPSTREAMS__3__NAME: upstreams[3]: no such upstream: there are 1, and a new one must be upstreams[1]"
    );
    let err = load_env(&[("SLUICE_UPSTREAMS__FIRST__NAME", "x")]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SLUICE_UPSTREAMS__FIRST__NAME: upstreams.first.name: "),
        "{err}"
    );
    let err = load_env(&[("SLUICE_UPSTREAMS__1__NAME", "x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SLUICE_UPSTREAMS__1__NAME: upstreams[1].base_url: required key is missing"
    );
    let err = load_env(&[("SLUICE_UPSTREAMS__0__MODLES", "[]")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SLUICE_UPSTREAMS__0__MODLES: upstreams[0].modles: unknown key"
    );
}

#[test]
fn unknown_keys_in_the_file_are_errors() {
    let file = File::new("[server]\nbogus = 1\n");
    assert_eq!(
        file.error(&[]),
        format!("{}: server.bogus: unknown key", file.name())
    );

    let file = File::new(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"http://a/v1\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"http://b/v1\"\nmodles = [\"*\"]\n",
    );
    assert_eq!(
        file.error(&[]),
        format!("{}: upstreams[1].modles: unknown key", file.name())
    );

    let file = File::new("[servers]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(
        file.error(&[]),
        format!("{}: servers: unknown key", file.name())
    );

    let file =
        File::new("[[upstreams]]\nname = \"a\"\nbase_url = \"http://a/v1\"\napi_key = \"sk-x\"\n");
    let message = file.error(&[]);
    assert!(message.starts_with(&format!(
        "{}: upstreams[0].api_key: unknown key",
        file.name()
    )));
    assert!(
        message.contains("api_key_env") && !message.contains("sk-x"),
        "{message}"
    );
}

#[test]
fn unknown_keys_in_the_env_are_errors() {
    let err = load_env(&[("SLUICE_SERVER__BOGUS", "1")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SLUICE_SERVER__BOGUS: server.bogus: unknown key"
    );
    assert_eq!(err.key(), Some("server.bogus"));
    let err = load_env(&[("SLUICE_BOGUS__KEY", "1")]).unwrap_err();
    assert_eq!(err.to_string(), "SLUICE_BOGUS__KEY: bogus: unknown key");
    let err = load_env(&[("SLUICE_SERVER____LISTEN", "1")]).unwrap_err();
    assert!(
        err.to_string().starts_with("SLUICE_SERVER____LISTEN: "),
        "{err}"
    );
}

#[test]
fn bad_types_name_file_key_and_problem() {
    let file = File::new("[server]\nmax_concurrency = \"lots\"\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: server.max_concurrency: invalid type: found string \"lots\", expected usize",
            file.name()
        )
    );
    let file = File::new("[cache]\nenabled = \"yes\"\n");
    assert!(
        file.error(&[])
            .starts_with(&format!("{}: cache.enabled: invalid type", file.name()))
    );
    let file = File::new("server = 5\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: server: invalid type: found signed int `5`, expected a table",
            file.name()
        )
    );
    let file = File::new("[upstreams]\nname = \"a\"\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: upstreams: invalid type: found a table, expected an array",
            file.name()
        )
    );
    let file = File::new("[cache]\nscope = \"everyone\"\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: cache.scope: unknown value \"everyone\", expected one of \"key\", \"global\"",
            file.name()
        )
    );
    let file = File::new("[retry]\nretry_on = [429, 70000]\n");
    assert!(
        file.error(&[])
            .starts_with(&format!("{}: retry.retry_on[1]: ", file.name()))
    );
    let file = File::new("[[upstreams]]\nbase_url = \"http://a/v1\"\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: upstreams[0].name: required key is missing",
            file.name()
        )
    );

    let err = load_env(&[("SLUICE_SERVER__MAX_CONCURRENCY", "lots")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SLUICE_SERVER__MAX_CONCURRENCY: server.max_concurrency: invalid type: found string \"lots\", expected usize"
    );
}

#[test]
fn bad_durations_sizes_and_addresses() {
    let file = File::new("[server]\nrequest_timeout = \"soon\"\n");
    let message = file.error(&[]);
    assert!(
        message.starts_with(&format!("{}: server.request_timeout: ", file.name())),
        "{message}"
    );
    assert!(message.contains("soon"), "{message}");

    let file = File::new("[server]\nshutdown_grace = 30\n");
    assert!(file.error(&[]).starts_with(&format!(
        "{}: server.shutdown_grace: invalid type",
        file.name()
    )));

    let file = File::new("[server]\nmax_body_size = \"lots\"\n");
    assert!(
        file.error(&[]).starts_with(&format!(
            "{}: server.max_body_size: invalid size \"lots\"",
            file.name()
        )),
        "{}",
        file.error(&[])
    );
    let file = File::new("[cache]\nmemory_max_size = -1\n");
    assert!(
        file.error(&[])
            .starts_with(&format!("{}: cache.memory_max_size: ", file.name()))
    );

    let err = load_env(&[("SLUICE_SERVER__LISTEN", "nope")]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SLUICE_SERVER__LISTEN: server.listen: invalid socket address \"nope\""),
        "{err}"
    );
}

#[test]
fn sizes_accept_units_and_bytes_and_print_exactly() {
    for (text, bytes) in [
        ("\"10MiB\"", 10 << 20),
        ("\"10 MiB\"", 10 << 20),
        ("\"10MB\"", 10_000_000),
        ("\"512kb\"", 512_000),
        ("\"1.5KiB\"", 1536),
        ("1234", 1234),
        ("\"1234\"", 1234),
    ] {
        let c = load_toml(&format!("[server]\nmax_body_size = {text}\n"));
        assert_eq!(c.server.max_body_size.as_u64(), bytes, "{text}");
    }
    assert_eq!(de::format_size(32 << 20), "32 MiB");
    assert_eq!(de::format_size(10_000_000), "10 MB");
    assert_eq!(de::format_size(1234), "1234 B");
    assert_eq!(de::format_size(0), "0 B");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let file = File::new("[server]\nlisten = \n");
    let message = file.error(&[]);
    assert!(
        message.starts_with(&format!("{}: line 2, column ", file.name())),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn unreadable_file_is_an_error() {
    let path = Path::new("/nonexistent/sluice/x.toml");
    let err = Config::load_with_env(Some(path), env(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/sluice/x.toml: cannot read file: No such file or directory"
    );
}

/// Each case changes a valid config and names the key `validate` must report.
#[test]
fn every_validation_rule() {
    type Mutate = fn(&mut Config);
    let cases: &[(Mutate, &str)] = &[
        (|c| c.upstreams.clear(), "upstreams"),
        (|c| c.upstreams[0].name = " ".into(), "upstreams[0].name"),
        (
            |c| c.upstreams.push(c.upstreams[0].clone()),
            "upstreams[1].name",
        ),
        (
            |c| c.upstreams[0].base_url = "ftp://x/v1".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "api.openai.com/v1".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "http:///v1".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "http://h/v1?x=1".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "http://h/v1#top".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "not a url".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "http://h:port/v1".into(),
            "upstreams[0].base_url",
        ),
        (
            |c| c.upstreams[0].base_url = "http://u:p/w@h/v1".into(),
            "upstreams[0].base_url",
        ),
        (|c| c.upstreams[0].models.clear(), "upstreams[0].models"),
        (
            |c| c.upstreams[0].models = vec!["gpt-[".into()],
            "upstreams[0].models[0]",
        ),
        (
            |c| c.upstreams[0].models = vec!["*".into(), String::new()],
            "upstreams[0].models[1]",
        ),
        (|c| c.upstreams[0].weight = 0, "upstreams[0].weight"),
        (
            |c| c.upstreams[0].timeout = Duration::ZERO,
            "upstreams[0].timeout",
        ),
        (
            |c| c.upstreams[0].connect_timeout = Duration::ZERO,
            "upstreams[0].connect_timeout",
        ),
        (|c| c.upstreams[0].prewarm = 65, "upstreams[0].prewarm"),
        (
            |c| c.upstreams[0].api_key_env = Some(String::new()),
            "upstreams[0].api_key_env",
        ),
        (
            |c| c.upstreams[0].api_key_env = Some("OPENAI KEY".into()),
            "upstreams[0].api_key_env",
        ),
        (|c| c.server.max_concurrency = 0, "server.max_concurrency"),
        (
            |c| c.server.max_body_size = ByteSize::b(0),
            "server.max_body_size",
        ),
        (
            |c| c.server.request_timeout = Duration::ZERO,
            "server.request_timeout",
        ),
        (
            |c| c.server.header_read_timeout = Duration::ZERO,
            "server.header_read_timeout",
        ),
        (
            |c| c.server.body_read_timeout = Duration::ZERO,
            "server.body_read_timeout",
        ),
        (|c| c.server.max_headers = 0, "server.max_headers"),
        (
            |c| c.server.max_header_size = ByteSize::kib(4),
            "server.max_header_size",
        ),
        (
            |c| c.server.max_header_size = ByteSize::gib(1),
            "server.max_header_size",
        ),
        (
            |c| c.server.max_uri_length = ByteSize::b(0),
            "server.max_uri_length",
        ),
        (
            |c| c.server.max_uri_length = ByteSize::kib(65),
            "server.max_uri_length",
        ),
        (|c| c.server.max_json_depth = 0, "server.max_json_depth"),
        (|c| c.server.max_json_depth = 129, "server.max_json_depth"),
        (
            |c| c.retry.base_delay = Duration::from_secs(11),
            "retry.base_delay",
        ),
        (|c| c.retry.retry_on = vec![429, 99], "retry.retry_on[1]"),
        (|c| c.retry.retry_on = vec![600], "retry.retry_on[0]"),
        (|c| c.retry.retry_on = vec![503, 400], "retry.retry_on[1]"),
        (|c| c.retry.retry_on = vec![404], "retry.retry_on[0]"),
        (|c| c.breaker.failure_ratio = 0.0, "breaker.failure_ratio"),
        (|c| c.breaker.failure_ratio = 1.5, "breaker.failure_ratio"),
        (
            |c| c.breaker.failure_ratio = f64::NAN,
            "breaker.failure_ratio",
        ),
        (|c| c.breaker.min_requests = 0, "breaker.min_requests"),
        (
            |c| c.breaker.window = Duration::from_millis(500),
            "breaker.window",
        ),
        (
            |c| c.breaker.window = Duration::from_secs(601),
            "breaker.window",
        ),
        (|c| c.breaker.cooldown = Duration::ZERO, "breaker.cooldown"),
        (
            |c| c.upstreams[0].first_byte_timeout = Duration::ZERO,
            "upstreams[0].first_byte_timeout",
        ),
        (
            |c| c.upstreams[0].idle_timeout = Duration::ZERO,
            "upstreams[0].idle_timeout",
        ),
        (|c| c.retry.budget = 1.5, "retry.budget"),
        (|c| c.retry.budget = -0.1, "retry.budget"),
        (|c| c.retry.budget = f64::NAN, "retry.budget"),
        (|c| c.cache.ttl = Duration::ZERO, "cache.ttl"),
        (
            |c| c.cache.redis_timeout = Duration::ZERO,
            "cache.redis_timeout",
        ),
        (
            |c| c.cache.redis_url = "http://:pw@h".into(),
            "cache.redis_url",
        ),
        (|c| c.prune.max_messages = 0, "prune.max_messages"),
        (
            |c| c.prune.max_context_tokens = 0,
            "prune.max_context_tokens",
        ),
        (
            |c| c.compress.max_prompt_tokens = 0,
            "compress.max_prompt_tokens",
        ),
        (|c| c.prune.cut_depth = 0.0, "prune.cut_depth"),
        (|c| c.prune.cut_depth = 1.0, "prune.cut_depth"),
        (|c| c.compress.head_ratio = 0.0, "compress.head_ratio"),
        (|c| c.compress.head_ratio = 1.0, "compress.head_ratio"),
        (
            |c| c.rate_limit.requests_per_minute = Some(0),
            "rate_limit.requests_per_minute",
        ),
        (
            |c| c.rate_limit.tokens_per_minute = Some(0),
            "rate_limit.tokens_per_minute",
        ),
        (
            |c| c.sessions.header = "x session".into(),
            "sessions.header",
        ),
        (|c| c.sessions.header = String::new(), "sessions.header"),
        (|c| c.sessions.max_concurrent = 0, "sessions.max_concurrent"),
        (
            |c| c.sessions.idle_timeout = Duration::ZERO,
            "sessions.idle_timeout",
        ),
        (
            |c| c.auth.client_keys_env = Some("1KEYS".into()),
            "auth.client_keys_env",
        ),
        (|c| c.log.level = String::new(), "log.level"),
        (|c| c.log.level = "info,[".into(), "log.level"),
    ];
    for (mutate, key) in cases {
        let mut config = Config::default();
        mutate(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), Some(*key), "{err}");
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}

#[test]
fn valid_edge_values_pass_validation() {
    let mut c = Config::default();
    c.retry.base_delay = c.retry.max_delay;
    c.retry.budget = 0.0;
    c.retry.retry_on = vec![408, 409, 425, 429, 500, 599];
    c.breaker.failure_ratio = 1.0;
    c.breaker.min_requests = 1;
    c.breaker.window = Duration::from_secs(1);
    c.server.shutdown_grace = Duration::ZERO;
    c.sessions.header = "X-Conversation".into();
    c.log.level = "warn,sluice=trace".into();
    for url in [
        "redis://h",
        "redis+cluster://h1:7000,h2:7000",
        "redis+unix:///tmp/r.sock",
        "unix:///tmp/r.sock",
    ] {
        c.cache.redis_url = url.into();
        c.validate().unwrap();
    }
    c.cache.redis_url = "rediss://:secret@h:6380".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("cache.redis_url") && err.contains("TLS"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    c.cache.redis_url = String::new();
    c.upstreams[0].base_url = "http://user:pw@127.0.0.1:9000".into();
    c.upstreams[0].models = vec!["gpt-4o*".into(), "o[13]-*".into(), "?".into()];
    c.validate().unwrap();
}

#[test]
fn validation_errors_from_the_file_or_env_name_it() {
    let file = File::new("[server]\nmax_concurrency = 0\n");
    assert_eq!(
        file.error(&[]),
        format!(
            "{}: server.max_concurrency: must be at least 1",
            file.name()
        )
    );
    let err = load_env(&[("SLUICE_COMPRESS__HEAD_RATIO", "1.5")]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SLUICE_COMPRESS__HEAD_RATIO: compress.head_ratio: "),
        "{err}"
    );
}

#[test]
fn api_keys_are_read_from_the_named_variable() {
    let file = File::new(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"http://a/v1\"\napi_key_env = \"OPENAI_API_KEY\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"http://b/v1\"\n",
    );
    let c = file.load(&[("OPENAI_API_KEY", "sk-secret")]).unwrap();
    assert_eq!(
        c.upstreams[0].api_key.as_ref().unwrap().expose(),
        "sk-secret"
    );
    assert!(c.upstreams[1].api_key.is_none());

    assert_eq!(
        file.error(&[]),
        "upstreams[0].api_key_env: environment variable OPENAI_API_KEY is not set"
    );
    assert_eq!(
        file.error(&[("OPENAI_API_KEY", " ")]),
        "upstreams[0].api_key_env: environment variable OPENAI_API_KEY is empty"
    );

    let c = load_env(&[
        ("SLUICE_UPSTREAMS__0__API_KEY_ENV", "SLUICE_OPENAI_KEY"),
        ("SLUICE_OPENAI_KEY", "sk-env"),
    ])
    .unwrap();
    assert_eq!(
        c.upstreams[0].api_key.as_ref().unwrap().expose(),
        "sk-env",
        "a secret variable with the SLUICE_ prefix is not a config key"
    );
}

#[test]
fn secrets_and_url_passwords_are_masked() {
    for (url, masked) in [
        ("redis://:hunter2@host:6379/0", "redis://:****@host:6379/0"),
        ("redis://user:pw@h", "redis://user:****@h"),
        ("https://token@h/v1", "https://****@h/v1"),
        ("redis://:p/ss@host:6379", "redis://:****@host:6379"),
        (
            "redis+unix:///tmp/r.sock?db=1&password=pw",
            "redis+unix:///tmp/r.sock?db=1&password=****",
        ),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("", ""),
    ] {
        assert_eq!(mask_url(url), masked, "{url}");
    }

    let secret = Secret::new("sk-very-secret");
    assert_eq!(format!("{secret} {secret:?}"), "**** ****");
    assert_eq!(secret.expose(), "sk-very-secret");

    let file = File::new(
        "[cache]\nredis_url = \"redis://:hunter2@redis:6379/0\"\n\
         [[upstreams]]\nname = \"a\"\nbase_url = \"https://bob:pw123@a.example/v1\"\napi_key_env = \"KEY_A\"\n",
    );
    let c = file.load(&[("KEY_A", "sk-very-secret")]).unwrap();
    assert_eq!(
        c.cache.redis_url, "redis://:hunter2@redis:6379/0",
        "the field keeps the real URL"
    );
    let debug = format!("{c:?}");
    let toml = c.to_masked_toml();
    for shown in [&debug, &toml] {
        for secret in ["hunter2", "pw123", "sk-very-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
        }
    }
    assert!(
        toml.contains("redis_url = \"redis://:****@redis:6379/0\""),
        "{toml}"
    );
    assert!(
        toml.contains("base_url = \"https://bob:****@a.example/v1\""),
        "{toml}"
    );
    assert!(debug.contains("redis://:****@redis:6379/0"), "{debug}");
}

#[test]
fn apply_overrides_sets_listen_and_first_upstream() {
    let mut c = load_toml(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"http://a/v1\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"http://b/v1\"\n",
    );
    c.apply_overrides(Some("0.0.0.0:9999"), Some("http://127.0.0.1:9000/v1"))
        .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(c.upstreams[0].base_url, "http://127.0.0.1:9000/v1");
    assert_eq!(c.upstreams[1].base_url, "http://b/v1");

    c.apply_overrides(None, None).unwrap();
    let err = c.apply_overrides(Some("nope"), None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--listen: server.listen: invalid socket address \"nope\""),
        "{err}"
    );
    let err = c.apply_overrides(None, Some("ftp://x")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--upstream: upstreams[0].base_url: "),
        "{err}"
    );
}

#[test]
fn masked_toml_parses_back_into_the_same_config() {
    let file = File::new(
        r#"
        [server]
        listen = "[::1]:8081"
        max_body_size = 1000001
        shutdown_grace = "1m 30s"
        [[upstreams]]
        name = "local"
        base_url = "http://127.0.0.1:8000/v1"
        models = ["llama-*", "qwen*"]
        api_key_env = "LOCAL_KEY"
        [[upstreams]]
        name = "openai"
        base_url = "https://api.openai.com/v1"
        prewarm = 0
        [retry]
        budget = 0.25
        base_delay = "150ms"
        [cache]
        redis_url = "redis://:pw@redis:6380/1"
        memory_max_size = "10MB"
        ttl = "1day"
        [rate_limit]
        tokens_per_minute = 5000
        [auth]
        client_keys_env = "CLIENT_KEYS"
        [log]
        format = "json"
        "#,
    );
    let vars = [
        ("LOCAL_KEY", "sk-local"),
        ("CLIENT_KEYS", "team-a:ck-secret-a,ck-secret-b"),
    ];
    let first = file.load(&vars).unwrap().to_masked_toml();
    for secret in ["sk-local", "ck-secret", "pw@"] {
        assert!(!first.contains(secret), "{secret} in {first}");
    }
    assert!(
        first.contains("# requests_per_minute is not set"),
        "{first}"
    );
    let again = File::new(&first).load(&vars).unwrap().to_masked_toml();
    assert_eq!(again, first);
    assert!(first.contains("max_body_size = \"1000001 B\""), "{first}");
    assert!(first.contains("shutdown_grace = \"1m 30s\""), "{first}");
}

#[test]
fn client_keys_are_read_from_their_variable() {
    let file = File::new(
        r#"
        [auth]
        client_keys_env = "CLIENT_KEYS"
        "#,
    );
    let c = file
        .load(&[("CLIENT_KEYS", " team-a:ck-1, ck-2 ,, team-a:ck-3 ")])
        .unwrap();
    let names: Vec<&str> = c.auth.client_keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!((names[0], names[2]), ("team-a", "team-a"));
    assert!(
        names[1].starts_with("key-") && names[1].len() == 12,
        "{names:?}"
    );
    assert_eq!(c.auth.client_keys[1].key.expose(), "ck-2");
    assert!(!format!("{:?}", c.auth).contains("ck-"));

    for (value, why) in [
        ("", "holds no keys"),
        (" , ", "holds no keys"),
        ("a:", "the key is empty"),
        (":ck-1", "name must be"),
        ("bad name:ck-1", "name must be"),
        ("a:ck 1", "printable ASCII"),
        ("a:ck-1,b:ck-1", "listed twice"),
    ] {
        let err = file
            .load(&[("CLIENT_KEYS", value)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.client_keys_env") && err.contains(why),
            "{value:?}: {err}"
        );
        assert!(!err.contains("ck-1") || value.starts_with(':'), "{err}");
    }
    let err = file.load(&[]).unwrap_err().to_string();
    assert!(err.contains("CLIENT_KEYS is not set"), "{err}");
}

#[test]
fn an_upstream_key_is_not_offered_to_the_network_without_client_keys() {
    let open = File::new(
        r#"
        [server]
        listen = "0.0.0.0:8080"
        [[upstreams]]
        name = "openai"
        base_url = "https://api.openai.com/v1"
        [[upstreams]]
        name = "keyed"
        base_url = "https://api.openai.com/v1"
        api_key_env = "KEY"
        "#,
    );
    let err = open.load(&[("KEY", "sk-1")]).unwrap_err().to_string();
    assert!(
        err.contains("upstreams[1].api_key_env") && err.contains("client_keys_env"),
        "{err}"
    );
    // Loopback, or client keys, make it safe.
    let mut c = Config::default();
    c.upstreams[0].api_key_env = Some("KEY".into());
    c.server.listen = "127.0.0.1:8080".parse().unwrap();
    c.validate().unwrap();
    c.server.listen = "[::1]:8080".parse().unwrap();
    c.validate().unwrap();
    let err = c.apply_overrides(Some("0.0.0.0:8080"), None).unwrap_err();
    assert!(err.to_string().contains("api_key_env"), "{err}");
    c.auth.client_keys_env = Some("CLIENT_KEYS".into());
    c.apply_overrides(Some("0.0.0.0:8080"), None).unwrap();
}

#[test]
fn prices_load_validate_and_print_back() {
    let c = load_toml(
        "[usage]\nmax_label_values = 5\n[usage.prices]\n\"gpt-4o*\" = { input = 2.5, output = 10, cached_input = 1.25 }\n\"text-embedding-3-small\" = { input = 0.02 }\n",
    );
    assert_eq!(c.usage.max_label_values, 5);
    let price = c.usage.prices["gpt-4o*"];
    assert_eq!(
        (price.input, price.output, price.cached_input),
        (2.5, 10.0, Some(1.25))
    );
    assert_eq!(c.usage.prices["text-embedding-3-small"].output, 0.0);
    // The printed config reads back as the same prices.
    let printed = c.to_masked_toml();
    assert!(printed.contains("[usage.prices]"), "{printed}");
    let back = load_toml(&printed);
    assert_eq!(back.usage, c.usage);

    for (text, key) in [
        (
            "[usage.prices]\nm = { input = -1 }\n",
            "usage.prices.\"m\".input",
        ),
        (
            "[usage.prices]\nm = { input = 1, output = nan }\n",
            "usage.prices.\"m\".output",
        ),
        (
            "[usage.prices]\n\"[\" = { input = 1 }\n",
            "usage.prices.\"[\"",
        ),
        ("[usage]\nmax_label_values = 0\n", "usage.max_label_values"),
    ] {
        let error = File::new(text).load(&[]).unwrap_err().to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
    let unknown = File::new("[usage.prices]\nm = { input = 1, outptu = 2 }\n")
        .load(&[])
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("outptu"), "{unknown}");
}

#[test]
fn stream_usage_by_name_or_by_the_older_flag() {
    for (written, read) in [
        ("\"count\"", StreamUsage::Count),
        ("\"ask\"", StreamUsage::Ask),
        ("true", StreamUsage::Ask),
        ("false", StreamUsage::Count),
    ] {
        let config = load_toml(&format!("[usage]\nstream_usage = {written}\n"));
        assert_eq!(config.usage.stream_usage, read, "{written}");
    }
    assert_eq!(
        load_env(&[("SLUICE_USAGE__STREAM_USAGE", "ask")])
            .unwrap()
            .usage
            .stream_usage,
        StreamUsage::Ask
    );
    let error = File::new("[usage]\nstream_usage = \"sometimes\"\n").error(&[]);
    assert!(error.contains("\"count\" or \"ask\""), "{error}");
}
