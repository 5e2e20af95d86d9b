//! The `sluice` command line: parse arguments, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod healthcheck;

use sluice::config::Config;

/// jemalloc: a proxy allocates and frees many small buffers per request;
/// glibc's allocator spent about a tenth of sluice's CPU on them under load.
/// mimalloc was as fast but held half as much memory again with 2,000 open
/// streams (156 MiB peak against jemalloc's 104 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use sluice::mock::MockOptions;

/// A fast reverse proxy for OpenAI-compatible LLM APIs.
///
/// Point your SDK's base URL at it (http://127.0.0.1:8080/v1) and change
/// nothing else. Without a subcommand, `sluice` runs the proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Validate a config and print the effective one (defaults and
    /// environment applied, secrets masked). Exit 0 valid, 2 invalid.
    CheckConfig(ConfigArg),
    /// Serve a fast, deterministic fake OpenAI-compatible API (for demos,
    /// tests and load tests).
    MockUpstream(MockArgs),
    /// Try sluice without an API key: a mock upstream, sluice in front of it
    /// and a short mix of requests, in one process.
    ///
    /// Prints one row per request (cache outcome, prompt tokens before and
    /// after pruning and compression, time) and a summary: answers from the
    /// cache, upstream calls, tokens saved, the latency sluice adds.
    Demo,
    /// Usage from the ledger (`[ledger] url`), summed by group over a time
    /// range, as a table: requests, tokens, cost, tokens saved.
    Usage(UsageArgs),
    /// Check that a running sluice answers (for container HEALTHCHECKs).
    ///
    /// GETs URL (plain http): exit 0 on a 2xx answer within 2 s, 1 otherwise
    /// with the reason on stderr.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
struct UsageArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Start of the range: a duration back from now (`7d`, `12h`) or an
    /// RFC 3339 time (`2026-12-01T00:00:00Z`).
    #[arg(long, value_name = "WHEN", default_value = "1d")]
    since: String,
    /// End of the range, the same way; default now.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Comma-separated: key, model, upstream, endpoint, day, hour.
    #[arg(long, value_name = "GROUPS", default_value = "key,model")]
    group_by: String,
}

#[derive(Debug, Args)]
struct HealthcheckArgs {
    /// URL to GET (plain http).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    url: String,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Config file (TOML). Default: config/sluice.toml when it exists,
    /// otherwise built-in defaults.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on, overriding `[server] listen` (e.g. 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Base URL of the default (first) upstream, overriding its `base_url`
    /// (e.g. http://127.0.0.1:9000/v1).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
}

#[derive(Debug, Args)]
struct MockArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: String,
    /// Delay before each answer's head, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long, value_name = "N", default_value_t = 8)]
    chunks: usize,
    /// A default `x-mock-*` control header for every request that does not send it
    /// (repeatable), e.g. --control 'x-mock-status: 503' --control 'x-mock-fail-rate: 0.2'.
    #[arg(long = "control", value_name = "NAME:VALUE")]
    controls: Vec<String>,
}

/// Exit code for bad flags and bad configs.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::CheckConfig(args)) => check_config(args),
        Some(Command::MockUpstream(args)) => mock_upstream(args),
        Some(Command::Demo) => demo(),
        Some(Command::Usage(args)) => usage(&args),
        Some(Command::Healthcheck(args)) => healthcheck_command(&args.url),
    }
}

/// A time given as a duration back from now or an RFC 3339 time.
fn when(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(back) = humantime::parse_duration(text) {
        return std::time::SystemTime::now()
            .checked_sub(back)
            .ok_or_else(|| format!("{text} is too far back"));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("{text} is neither a duration (7d) nor an RFC 3339 time"))
}

fn usage(args: &UsageArgs) -> ExitCode {
    use sluice::ledger::report::{self, Group};
    let config = match Config::load(args.config.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if config.ledger.url.trim().is_empty() {
        eprintln!("sluice usage: no ledger configured ([ledger] url)");
        return ExitCode::from(EXIT_USAGE);
    }
    let range = when(&args.since).and_then(|since| {
        let until = args
            .until
            .as_deref()
            .map_or_else(|| Ok(std::time::SystemTime::now()), when)?;
        Ok((since, until))
    });
    let groups: Option<Vec<Group>> = args
        .group_by
        .split(',')
        .filter(|g| !g.trim().is_empty())
        .map(Group::parse)
        .collect();
    let ((since, until), groups) = match (range, groups) {
        (Ok(range), Some(groups)) => (range, groups),
        (Err(error), _) => {
            eprintln!("sluice usage: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
        (_, None) => {
            eprintln!("sluice usage: --group-by takes key, model, upstream, endpoint, day, hour");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match runtime(true) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(report::usage(&config.ledger.url, since, until, &groups)) {
        Ok(sums) => {
            use std::io::Write;
            let table = report::table(&groups, &sums);
            match std::io::stdout().lock().write_all(table.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(error) => {
            eprintln!("sluice usage: {error}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> ExitCode {
    // Warnings only, so sluice's own logs stay out of the table (RUST_LOG wins).
    sluice::observe::init_logging(&sluice::config::LogConfig {
        level: "warn".to_owned(),
        ..sluice::config::LogConfig::default()
    });
    let runtime = match runtime(true) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let report = match runtime.block_on(sluice::demo::run()) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("sluice demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    match report.write(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice demo: cannot write the report: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 1 on every failure: Docker reserves 2 in a HEALTHCHECK.
fn healthcheck_command(url: &str) -> ExitCode {
    let runtime = match runtime(false) {
        Ok(runtime) => runtime,
        Err(_) => return ExitCode::FAILURE,
    };
    match runtime.block_on(healthcheck::check(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("sluice healthcheck: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(config.config.as_deref()).map_err(|error| {
        eprintln!("sluice: {error}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// The main thread's runtime. For `serve` it only waits for signals (the
/// proxy runs on its own worker threads), so one thread is enough.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|error| {
        eprintln!("sluice: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let source = sluice::reload::ConfigSource::new(args.config.config, args.listen, args.upstream);
    let config = match source.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    sluice::observe::init_logging(&config.log);
    let runtime = match runtime(false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(sluice::run_with_reload(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice: {error}");
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "check-config prints the effective config to stdout"
)]
fn check_config(args: ConfigArg) -> ExitCode {
    match load(&args) {
        Ok(config) => {
            print!("{}", config.to_masked_toml());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn mock_upstream(args: MockArgs) -> ExitCode {
    let listen: std::net::SocketAddr = match args.listen.parse() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!(
                "sluice: --listen: invalid socket address {:?}: {error}",
                args.listen
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut controls = http::HeaderMap::new();
    for arg in &args.controls {
        match sluice::mock::controls::parse_control(arg) {
            Ok((name, value)) => {
                controls.insert(name, value);
            }
            Err(error) => {
                eprintln!("sluice: --control: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    if let Err(error) = sluice::mock::controls::check_defaults(&controls) {
        eprintln!("sluice: --control: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    sluice::observe::init_logging(&sluice::config::LogConfig::default());
    let runtime = match runtime(true) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = MockOptions {
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        chunks: args.chunks,
        record: false,
        controls,
    };
    runtime.block_on(async move {
        let listener =
            match sluice::server::listen(listen).and_then(tokio::net::TcpListener::from_std) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("sluice: cannot listen on {listen}: {error}");
                    return ExitCode::FAILURE;
                }
            };
        tracing::info!(addr = %listen, "mock upstream listening; base URL http://{listen}/v1");
        match sluice::mock::serve(listener, options, sluice::server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sluice: mock upstream failed: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
