//! The compress layer: picks the level (config or `x-sluice-compress`),
//! runs the [`super::Compressor`] and puts the compressed request in place.

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use super::*;

#[derive(Debug, Clone)]
pub struct CompressLayer {
    compressor: Compressor,
}

impl CompressLayer {
    pub fn new(config: &CompressConfig, counter: Arc<Counter>) -> CompressLayer {
        CompressLayer {
            compressor: Compressor::new(config, counter),
        }
    }
}

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;
    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            inner,
            compressor: self.compressor.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Compress<S> {
    inner: S,
    compressor: Compressor,
}

impl<S> Service<Request<Body>> for Compress<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Rewritten<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let level = req
            .extensions()
            .get::<Overrides>()
            .and_then(|o| o.compress)
            .unwrap_or(self.compressor.level);
        let Some(api) = req.extensions().get::<ApiRequest>() else {
            return Either::Left(self.inner.call(req));
        };
        if level == CompressLevel::Off
            || !matches!(
                api.endpoint(),
                Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
            )
        {
            return Either::Left(self.inner.call(req));
        }
        let cheap = inline(&self.compressor.counter, api);
        let api = api.clone();
        let compressor = self.compressor.clone();
        rewrite(
            &mut self.inner,
            req,
            cheap,
            move || compressor.run(&api, level),
            move |req, compressed| apply(req, level, compressed),
        )
    }
}

/// Puts a compressed request in place of the one in `req`, keeping the
/// original for the token headers.
pub(crate) fn apply(req: &mut Request<Body>, level: CompressLevel, compressed: Option<ApiRequest>) {
    let level = match level {
        CompressLevel::Off => "off",
        CompressLevel::Safe => "safe",
        CompressLevel::Aggressive => "aggressive",
    };
    let Some(compressed) = compressed else {
        metrics::counter!(COMPRESS_REQUESTS_TOTAL, "level" => level, "result" => "unchanged")
            .increment(1);
        return;
    };
    metrics::counter!(COMPRESS_REQUESTS_TOTAL, "level" => level, "result" => "compressed")
        .increment(1);
    let extensions = req.extensions_mut();
    if let Some(previous) = extensions.insert(compressed) {
        Original::keep(extensions, &previous, None);
    }
}
