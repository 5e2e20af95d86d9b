//! Which upstream serves a request.
//!
//! Upstreams listed with the same `models` patterns form a group that shares
//! their traffic. The first group whose patterns match the request's `model`
//! serves it (requests without a model: the first upstream's group); within
//! it, an upstream is drawn at random by `weight`, scaled down for one slower
//! than the fastest (by their average time to an answer head), among those in
//! rotation. When one fails after its retries, the group's other members are
//! next, then the later groups that match the model, in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::UpstreamError;
use super::health::{Admission, Health, Why};
use crate::config::{Config, UpstreamConfig};

/// One configured upstream with its shared client.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// `x-sluice-upstream` value, built once.
    pub name_header: HeaderValue,
    /// The name as a metrics label, shared rather than copied per request.
    pub label: metrics::SharedString,
    /// `base_url` as configured, parsed once.
    pub base_uri: http::Uri,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The base URL's path without a trailing slash; request paths after
    /// `/v1` are appended to it.
    pub base_path: String,
    pub models: Vec<glob::Pattern>,
    pub client: super::pool::HttpClient,
    /// The client's connector, holding the pre-warmed connections.
    pub connector: super::pool::WarmConnector,
    /// `Authorization: Bearer <key>` when the upstream has its own key.
    pub authorization: Option<HeaderValue>,
    pub timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub prewarm: usize,
    pub weight: u32,
    /// Position in the configuration.
    pub index: usize,
    /// Index of its group in [`Upstreams`]' groups.
    pub group: usize,
    /// Shared by every worker's copy of this upstream.
    pub health: Arc<Health>,
    /// Metric handles of the path where nothing fails, looked up once.
    pub hot: HotMetrics,
}

/// Handles of the metrics every successful attempt updates: a registry
/// lookup per request avoided for each.
#[derive(Debug)]
pub struct HotMetrics {
    pub duration: metrics::Histogram,
    pub first_byte: metrics::Histogram,
    pub status_200: metrics::Counter,
    pub success: metrics::Counter,
}

impl HotMetrics {
    fn new(label: &metrics::SharedString) -> HotMetrics {
        use crate::observe::{
            UPSTREAM_ATTEMPTS_TOTAL, UPSTREAM_DURATION, UPSTREAM_FIRST_BYTE_DURATION,
            UPSTREAM_REQUESTS_TOTAL,
        };
        HotMetrics {
            duration: metrics::histogram!(UPSTREAM_DURATION, "upstream" => label.clone()),
            first_byte: metrics::histogram!(UPSTREAM_FIRST_BYTE_DURATION, "upstream" => label.clone()),
            status_200: metrics::counter!(UPSTREAM_REQUESTS_TOTAL, "upstream" => label.clone(), "status" => "200"),
            success: metrics::counter!(UPSTREAM_ATTEMPTS_TOTAL, "upstream" => label.clone(), "outcome" => "success"),
        }
    }
}

/// Every upstream, in configuration order, and their groups.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    /// Members of each group, by upstream index, in the order groups first
    /// appear in the configuration.
    groups: Vec<Vec<usize>>,
}

/// The upstream to try next.
#[derive(Debug)]
pub enum Pick {
    Chosen(Arc<Upstream>),
    /// All that serve the model are out of rotation for at least this long.
    Out {
        retry_in: Duration,
        why: Why,
    },
    /// None left that has not been tried.
    Exhausted,
}

/// Why the upstreams could not be built from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstreams[{index}].models: {source}")]
    Pattern {
        index: usize,
        source: glob::PatternError,
    },
    #[error("upstreams[{index}]: cannot build HTTP client: {source}")]
    Client {
        index: usize,
        source: std::io::Error,
    },
    #[error("upstreams[{index}].base_url: {reason}")]
    Url { index: usize, reason: String },
    #[error("upstreams[{index}]: {what} is not a valid header value")]
    Header { index: usize, what: &'static str },
}

/// The health of every configured upstream, built once and shared by the
/// workers' [`Upstreams`].
pub fn health_of(config: &Config) -> Vec<Arc<Health>> {
    config
        .upstreams
        .iter()
        .map(|u| Arc::new(Health::new(&u.name, &config.breaker)))
        .collect()
}

impl Upstreams {
    /// The upstreams of `config` with health of their own (one worker, tests).
    pub fn from_config(config: &Config) -> Result<Upstreams, BuildError> {
        Upstreams::with_health(config, &health_of(config))
    }

    /// The upstreams of `config`, sharing `health` (from [`health_of`]).
    pub fn with_health(config: &Config, health: &[Arc<Health>]) -> Result<Upstreams, BuildError> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of = Vec::with_capacity(config.upstreams.len());
        for (index, u) in config.upstreams.iter().enumerate() {
            let same = |g: &Vec<usize>| {
                g.first()
                    .is_some_and(|&first| same_patterns(&config.upstreams[first].models, &u.models))
            };
            match groups.iter().position(same) {
                Some(g) => {
                    groups[g].push(index);
                    group_of.push(g);
                }
                None => {
                    group_of.push(groups.len());
                    groups.push(vec![index]);
                }
            }
        }
        let list = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| {
                let health = health
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Health::new(&u.name, &config.breaker)));
                build(index, u, group_of[index], health).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams { list, groups })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter()
    }

    /// The groups that may serve `model`, in order.
    fn candidate_groups<'a>(
        &'a self,
        model: Option<&'a str>,
    ) -> impl Iterator<Item = &'a [usize]> + 'a {
        let first = self.list.first().map(|u| u.group);
        self.groups
            .iter()
            .enumerate()
            .filter(move |(g, members)| match model {
                None => Some(*g) == first,
                Some(model) => members
                    .first()
                    .is_some_and(|&i| self.list[i].models.iter().any(|p| p.matches(model))),
            })
            .map(|(_, members)| members.as_slice())
    }

    /// The upstream to send a request for `model` to, skipping those in
    /// `tried` and those out of rotation. A half-open upstream chosen here is
    /// sent its probe.
    ///
    /// When every untried upstream that serves the model is kept out by its
    /// breaker (none merely resting after a 429), the one whose cool-down
    /// ends first is tried anyway (panic mode, as Envoy never ejects the
    /// last host): a recovered upstream is used on the next request, while
    /// the open state still spares an upstream that has a healthy
    /// alternative.
    pub fn pick(&self, model: Option<&str>, tried: &[usize], now: Instant) -> Pick {
        let mut out: Option<(Duration, Why)> = None;
        let mut panic: Option<(Duration, Arc<Upstream>)> = None;
        let mut consider = |upstream: &Arc<Upstream>| match upstream.health.admit(now) {
            Admission::Open | Admission::Probe => Some(Pick::Chosen(upstream.clone())),
            Admission::Closed { for_at_least, why } => {
                if out.is_none_or(|(d, _)| for_at_least < d) {
                    out = Some((for_at_least, why));
                }
                if why != Why::RateLimited && panic.as_ref().is_none_or(|(d, _)| for_at_least < *d)
                {
                    panic = Some((for_at_least, upstream.clone()));
                }
                None
            }
        };
        for members in self.candidate_groups(model) {
            // One upstream alone (the usual case): no drawing.
            if let [only] = members {
                if !tried.contains(only)
                    && let Some(pick) = consider(&self.list[*only])
                {
                    return pick;
                }
                continue;
            }
            let mut left: Vec<&Arc<Upstream>> = members
                .iter()
                .map(|&i| &self.list[i])
                .filter(|u| !tried.contains(&u.index))
                .collect();
            while !left.is_empty() {
                let chosen = draw(&left, now);
                if let Some(pick) = consider(left.swap_remove(chosen)) {
                    return pick;
                }
            }
        }
        if let Some((_, upstream)) = panic {
            upstream.health.panic_probe(now);
            return Pick::Chosen(upstream);
        }
        match out {
            Some((retry_in, why)) => Pick::Out { retry_in, why },
            None => Pick::Exhausted,
        }
    }

    /// The first pick for a request, or why there is none.
    pub fn first(&self, model: Option<&str>, now: Instant) -> Result<Arc<Upstream>, UpstreamError> {
        match self.pick(model, &[], now) {
            Pick::Chosen(upstream) => Ok(upstream),
            Pick::Exhausted => Err(UpstreamError::NoRoute {
                model: model.unwrap_or_default().to_owned(),
            }),
            Pick::Out { retry_in, why } => {
                let rate_limited = why == Why::RateLimited;
                let state = if rate_limited {
                    "rate limited (it answered 429 with Retry-After)"
                } else {
                    "failing (circuit breaker open)"
                };
                let serving =
                    model.map_or_else(|| "this request".to_owned(), |m| format!("model `{m}`"));
                Err(UpstreamError::Unavailable {
                    message: format!(
                        "Every upstream serving {serving} is {state}; retry in {} s.",
                        retry_in.as_secs().max(1)
                    ),
                    retry_after: retry_in,
                    rate_limited,
                })
            }
        }
    }
}

/// Whether two `models` lists are the same set of patterns.
fn same_patterns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p)) && b.iter().all(|p| a.contains(p))
}

/// Draws one of `candidates` (at least one) in rotation, by weight scaled by
/// speed; those out of rotation only when no other is left.
fn draw(candidates: &[&Arc<Upstream>], now: Instant) -> usize {
    if candidates.len() == 1 {
        return 0;
    }
    let fastest = candidates
        .iter()
        .map(|u| u.health.latency_us())
        .filter(|l| *l > 0.0)
        .fold(f64::INFINITY, f64::min);
    let shares: Vec<f64> = candidates
        .iter()
        .map(|u| {
            if !u.health.available(now) {
                return 0.0;
            }
            let latency = u.health.latency_us();
            let speed = if latency > 0.0 && fastest.is_finite() {
                fastest / latency
            } else {
                1.0
            };
            f64::from(u.weight) * speed
        })
        .collect();
    let total: f64 = shares.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut point = fastrand::f64() * total;
    for (i, share) in shares.iter().enumerate() {
        if point < *share {
            return i;
        }
        point -= share;
    }
    shares.iter().rposition(|s| *s > 0.0).unwrap_or(0)
}

fn build(
    index: usize,
    config: &UpstreamConfig,
    group: usize,
    health: Arc<Health>,
) -> Result<Upstream, BuildError> {
    let models = config
        .models
        .iter()
        .map(|m| glob::Pattern::new(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| BuildError::Pattern { index, source })?;
    let (client, connector) =
        super::pool::client(config).map_err(|source| BuildError::Client { index, source })?;
    let name_header = HeaderValue::from_str(&config.name).map_err(|_| BuildError::Header {
        index,
        what: "name",
    })?;
    let authorization =
        match &config.api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| BuildError::Header {
                        index,
                        what: "the key in api_key_env",
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
    let url_error = |reason: &str| BuildError::Url {
        index,
        reason: reason.to_owned(),
    };
    let base_uri: http::Uri = config
        .base_url
        .parse()
        .map_err(|e: http::uri::InvalidUri| url_error(&e.to_string()))?;
    let scheme = base_uri
        .scheme()
        .cloned()
        .ok_or_else(|| url_error("no scheme"))?;
    let authority = base_uri
        .authority()
        .cloned()
        .ok_or_else(|| url_error("no host"))?;
    let base_path = base_uri.path().trim_end_matches('/').to_owned();
    let label = metrics::SharedString::from(std::sync::Arc::<str>::from(config.name.as_str()));
    Ok(Upstream {
        base_uri,
        scheme,
        authority,
        base_path,
        name: config.name.clone(),
        hot: HotMetrics::new(&label),
        label,
        name_header,
        models,
        client,
        connector,
        authorization,
        timeout: config.timeout,
        first_byte_timeout: config.first_byte_timeout,
        idle_timeout: config.idle_timeout,
        prewarm: config.prewarm,
        weight: config.weight,
        index,
        group,
        health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(specs: &[(&str, &[&str])]) -> Upstreams {
        let weighted: Vec<_> = specs.iter().map(|(n, m)| (*n, *m, 1)).collect();
        self::weighted(&weighted)
    }

    fn name(u: &Upstreams, model: Option<&str>) -> Option<String> {
        u.first(model, Instant::now()).ok().map(|u| u.name.clone())
    }

    #[test]
    fn first_matching_pattern_wins() {
        let u = upstreams(&[
            ("local", &["llama-*", "qwen?"]),
            ("openai", &["gpt-*", "o[0-9]*"]),
            ("rest", &["*"]),
        ]);
        assert_eq!(name(&u, Some("llama-3-8b")).as_deref(), Some("local"));
        assert_eq!(name(&u, Some("qwen2")).as_deref(), Some("local"));
        assert_eq!(name(&u, Some("gpt-4o")).as_deref(), Some("openai"));
        assert_eq!(name(&u, Some("o3-mini")).as_deref(), Some("openai"));
        assert_eq!(name(&u, Some("claude")).as_deref(), Some("rest"));
        assert_eq!(name(&u, None).as_deref(), Some("local"));
    }

    #[test]
    fn unmatched_model_is_an_error() {
        let u = upstreams(&[("openai", &["gpt-*"])]);
        assert!(matches!(
            u.first(Some("llama"), Instant::now()),
            Err(UpstreamError::NoRoute { .. })
        ));
        assert_eq!(name(&u, None).as_deref(), Some("openai"));
    }

    fn weighted(specs: &[(&str, &[&str], u32)]) -> Upstreams {
        let upstreams = specs
            .iter()
            .map(|(name, models, weight)| UpstreamConfig {
                name: (*name).to_owned(),
                base_url: format!("http://127.0.0.1:9/{name}/v1"),
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                weight: *weight,
                ..UpstreamConfig::default()
            })
            .collect();
        let config = Config {
            upstreams,
            ..Config::default()
        };
        Upstreams::from_config(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn share_of(u: &Upstreams, model: &str, who: &str, draws: usize) -> f64 {
        let hits = (0..draws)
            .filter(|_| name(u, Some(model)).as_deref() == Some(who))
            .count();
        hits as f64 / draws as f64
    }

    #[test]
    fn same_patterns_share_traffic_by_weight() {
        let u = weighted(&[
            ("east", &["gpt-*"], 3),
            ("local", &["llama-*"], 1),
            ("west", &["gpt-*"], 1),
            ("rest", &["*"], 1),
        ]);
        let east = share_of(&u, "gpt-4o", "east", 4000);
        assert!((0.70..0.80).contains(&east), "{east}");
        assert_eq!(share_of(&u, "gpt-4o", "rest", 1000), 0.0);
        // The catch-all is a group of its own: llama stays on `local`.
        assert_eq!(share_of(&u, "llama-3", "local", 200), 1.0);
    }

    #[test]
    fn slower_upstreams_get_less() {
        let u = weighted(&[("a", &["*"], 1), ("b", &["*"], 1)]);
        let [a, b] = [0, 1].map(|i| u.list[i].health.clone());
        a.observe_latency(Duration::from_millis(10));
        b.observe_latency(Duration::from_millis(40));
        let share = share_of(&u, "m", "a", 4000);
        // Shares 1 : 1/4.
        assert!((0.74..0.86).contains(&share), "{share}");
    }

    #[test]
    fn fallbacks_follow_group_then_later_matches() {
        let u = weighted(&[
            ("a1", &["gpt-*"], 1),
            ("b", &["llama-*"], 1),
            ("a2", &["gpt-*"], 1),
            ("rest", &["*"], 1),
        ]);
        let now = Instant::now();
        let chosen = |tried: &[usize]| match u.pick(Some("gpt-4o"), tried, now) {
            Pick::Chosen(up) => Some(up.name.clone()),
            _ => None,
        };
        let first = chosen(&[]).unwrap_or_default();
        let (first_index, other) = if first == "a1" { (0, "a2") } else { (2, "a1") };
        assert_eq!(chosen(&[first_index]).as_deref(), Some(other));
        assert_eq!(chosen(&[0, 2]).as_deref(), Some("rest"));
        assert!(matches!(
            u.pick(Some("gpt-4o"), &[0, 2, 3], now),
            Pick::Exhausted
        ));
        // Without a model: the first upstream's group only.
        assert!(matches!(u.pick(None, &[0, 2], now), Pick::Exhausted));
    }

    #[test]
    fn upstreams_out_of_rotation_are_skipped() {
        let u = weighted(&[("a", &["*"], 1), ("b", &["*"], 1)]);
        let now = Instant::now();
        u.list[0].health.rest(now + Duration::from_secs(5));
        for _ in 0..50 {
            assert_eq!(name(&u, Some("m")).as_deref(), Some("b"));
        }
        u.list[1].health.rest(now + Duration::from_secs(2));
        match u.first(Some("m"), now) {
            Err(UpstreamError::Unavailable {
                retry_after,
                rate_limited,
                ..
            }) => {
                assert!(rate_limited);
                assert!(retry_after <= Duration::from_secs(2));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    /// Opens `u`'s breaker at `now` with failures.
    fn trip(u: &Upstream, now: Instant) {
        for _ in 0..20 {
            u.health.record(super::super::health::Outcome::Failure, now);
        }
        assert!(!u.health.available(now), "{} not tripped", u.name);
    }

    #[test]
    fn the_last_upstream_is_tried_even_with_its_breaker_open() {
        let u = weighted(&[("only", &["*"], 1)]);
        let now = Instant::now();
        trip(&u.list[0], now);
        // Panic mode: tried anyway, as the probe; a success closes it.
        assert_eq!(name(&u, Some("m")).as_deref(), Some("only"));
        u.list[0]
            .health
            .record(super::super::health::Outcome::Success, now);
        assert!(u.list[0].health.available(now));
        // Once tried by this request, it is not tried again.
        trip(&u.list[0], now);
        assert!(!matches!(u.pick(Some("m"), &[0], now), Pick::Chosen(_)));
    }

    #[test]
    fn an_open_breaker_still_spares_an_upstream_with_a_healthy_alternative() {
        let u = weighted(&[("a", &["*"], 1), ("b", &["*"], 1)]);
        let now = Instant::now();
        trip(&u.list[0], now);
        for _ in 0..50 {
            assert_eq!(name(&u, Some("m")).as_deref(), Some("b"));
        }
        // Both open: one is tried, then the other.
        trip(&u.list[1], now);
        let first = match u.pick(Some("m"), &[], now) {
            Pick::Chosen(up) => up.index,
            other => panic!("expected a panic pick, got {other:?}"),
        };
        match u.pick(Some("m"), &[first], now) {
            Pick::Chosen(up) => assert_ne!(up.index, first),
            other => panic!("expected the other one, got {other:?}"),
        }
        // An upstream resting after a 429 is not panicked into.
        let rested = weighted(&[("r", &["*"], 1)]);
        rested.list[0].health.rest(now + Duration::from_secs(5));
        assert!(matches!(
            rested.first(Some("m"), now),
            Err(UpstreamError::Unavailable { .. })
        ));
    }
}
