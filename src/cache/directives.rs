//! What a request asks of the cache: `Cache-Control` and `x-sluice-cache-ttl`.

use std::time::Duration;

use http::HeaderMap;

pub static X_SLUICE_CACHE_TTL: http::HeaderName =
    http::HeaderName::from_static("x-sluice-cache-ttl");

/// The cache directives of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-cache`: skip the lookup, store the fresh answer.
    pub no_cache: bool,
    /// `no-store`: neither look up nor store.
    pub no_store: bool,
    /// `max-age=N`: accept a stored answer at most this old.
    pub max_age: Option<Duration>,
    /// `x-sluice-cache-ttl: N`: store this answer for N seconds.
    pub ttl: Option<Duration>,
}

impl Directives {
    /// Reads the directives from request headers. Unknown directives and
    /// malformed values are ignored, as HTTP caches do.
    pub fn from_headers(headers: &HeaderMap) -> Directives {
        let mut directives = Directives::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let directive = directive.trim();
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive, None),
                };
                if name.eq_ignore_ascii_case("no-cache") {
                    directives.no_cache = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    directives.no_store = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    if let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok()) {
                        directives.max_age = Some(Duration::from_secs(secs));
                    }
                }
            }
        }
        directives.ttl = headers
            .get(&X_SLUICE_CACHE_TTL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|secs| *secs > 0)
            .map(|secs| Duration::from_secs(secs).min(super::store::MAX_TTL));
        directives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Directives {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, http::HeaderValue::from_static(v));
        }
        Directives::from_headers(&headers)
    }

    #[test]
    fn reads_cache_control_and_ttl() {
        assert_eq!(parse(&[]), Directives::default());
        let d = parse(&[
            ("cache-control", "No-Cache, max-age=30"),
            ("x-sluice-cache-ttl", "600"),
        ]);
        assert!(d.no_cache && !d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        assert_eq!(d.ttl, Some(Duration::from_secs(600)));
        let d = parse(&[("cache-control", "private"), ("cache-control", "no-store")]);
        assert!(d.no_store);
        let d = parse(&[("cache-control", "max-age=\"5\"")]);
        assert_eq!(d.max_age, Some(Duration::from_secs(5)));
    }

    #[test]
    fn malformed_values_are_ignored() {
        let d = parse(&[
            ("cache-control", "max-age=soon"),
            ("x-sluice-cache-ttl", "-3"),
        ]);
        assert_eq!(d, Directives::default());
        assert_eq!(parse(&[("x-sluice-cache-ttl", "0")]).ttl, None);
    }
}
