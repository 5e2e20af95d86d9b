//! Which upstream serves a request: by its `model`, first match wins.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request};

use super::UpstreamError;
use crate::config::{Config, UpstreamConfig};
use crate::openai::ApiRequest;

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
    /// `Authorization: Bearer <key>` when the upstream has its own key.
    pub authorization: Option<HeaderValue>,
    pub timeout: Duration,
    pub prewarm: usize,
}

/// Every upstream, in configuration order.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
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

impl Upstreams {
    pub fn from_config(config: &Config) -> Result<Upstreams, BuildError> {
        let list = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| build(index, u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams { list })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter()
    }

    /// The upstream for `req`: by the parsed body's `model` for understood
    /// endpoints, the first upstream otherwise.
    pub fn route<B>(&self, req: &Request<B>) -> Result<&Arc<Upstream>, UpstreamError> {
        let model = req
            .extensions()
            .get::<ApiRequest>()
            .and_then(ApiRequest::model);
        self.for_model(model)
    }

    /// The first upstream whose patterns match `model`; the first upstream
    /// when there is no model.
    pub fn for_model(&self, model: Option<&str>) -> Result<&Arc<Upstream>, UpstreamError> {
        let found = match model {
            None => self.list.first(),
            Some(model) => self
                .list
                .iter()
                .find(|u| u.models.iter().any(|p| p.matches(model))),
        };
        found.ok_or_else(|| UpstreamError::NoRoute {
            model: model.unwrap_or_default().to_owned(),
        })
    }
}

fn build(index: usize, config: &UpstreamConfig) -> Result<Upstream, BuildError> {
    let models = config
        .models
        .iter()
        .map(|m| glob::Pattern::new(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| BuildError::Pattern { index, source })?;
    let client =
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
    Ok(Upstream {
        base_uri,
        scheme,
        authority,
        base_path,
        name: config.name.clone(),
        label: metrics::SharedString::from(std::sync::Arc::<str>::from(config.name.as_str())),
        name_header,
        models,
        client,
        authorization,
        timeout: config.timeout,
        prewarm: config.prewarm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(specs: &[(&str, &[&str])]) -> Upstreams {
        let upstreams = specs
            .iter()
            .map(|(name, models)| UpstreamConfig {
                name: (*name).to_owned(),
                base_url: format!("http://127.0.0.1:9/{name}/v1"),
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                ..UpstreamConfig::default()
            })
            .collect();
        let config = Config {
            upstreams,
            ..Config::default()
        };
        Upstreams::from_config(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn name(u: &Upstreams, model: Option<&str>) -> Option<String> {
        u.for_model(model).ok().map(|u| u.name.clone())
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
            u.for_model(Some("llama")),
            Err(UpstreamError::NoRoute { .. })
        ));
        assert_eq!(name(&u, None).as_deref(), Some("openai"));
    }
}
