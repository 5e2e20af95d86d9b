//! The auth layer: checks the client key (or takes the passed-through
//! credential's identity), swaps it for the upstream's key, and puts the
//! client's identity in the request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::*;

/// Client keys checked (`[auth]` lists some), or credentials passed
/// through, the client told apart by a digest of them.
#[derive(Debug, Clone, Default)]
pub enum AuthLayer {
    Enabled(Arc<Keys>),
    #[default]
    Disabled,
}

impl AuthLayer {
    /// Checks clients against `keys` (from `[auth]`); with none, passes
    /// their credentials through.
    pub fn new(keys: &[ClientKey]) -> AuthLayer {
        if keys.is_empty() {
            return AuthLayer::Disabled;
        }
        let entries = keys
            .iter()
            .map(|k| {
                (
                    blake3::hash(k.key.expose().as_bytes()),
                    Identity::named(&k.name),
                )
            })
            .collect();
        AuthLayer::Enabled(Arc::new(Keys { entries }))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        let keys = match self {
            AuthLayer::Enabled(keys) => Some(keys.clone()),
            AuthLayer::Disabled => None,
        };
        Auth { inner, keys }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: Option<Arc<Keys>>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response<Body>, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let identity = match &self.keys {
            None => Identity::of_credentials(req.headers()),
            Some(keys) => match authenticate(keys, req.headers_mut()) {
                Ok(identity) => identity,
                Err(error) => {
                    return futures_util::future::Either::Right(std::future::ready(Err(
                        error.into()
                    )));
                }
            },
        };
        if let Some(tally) = req.extensions().get::<crate::report::Tally>() {
            tally.set_client(identity.name());
        }
        req.extensions_mut().insert(identity);
        futures_util::future::Either::Left(self.inner.call(req))
    }
}
