//! What a request is and what happened to it, as typed values the layers
//! share: nothing here imports a layer.
//!
//! On the way down, layers read and add values in the request's
//! extensions: the parsed request ([`crate::openai::ApiRequest`], from
//! ingress), the client's [`Identity`] (from auth), the per-request
//! overrides, the usage tally. On the way up, what happened to the request
//! travels as one [`Outcome`] in the response's extensions: each layer fills
//! in its part (the cache its outcome and tier, the tokens layer the prompt
//! counts, the upstream layer the upstream and the attempts), and the edge
//! turns it into the `x-sluice-*` headers in one place
//! ([`Outcome::write_headers`]). No layer reads a header another layer
//! wrote.
//!
//! ```
//! use sluice::context::{CacheOutcome, Outcome};
//! let mut response = http::Response::new(());
//! Outcome::of(&mut response).cache = Some(CacheOutcome::Hit);
//! let outcome = response.extensions_mut().remove::<Outcome>().unwrap_or_default();
//! let mut headers = http::HeaderMap::new();
//! outcome.write_headers(&mut headers);
//! assert_eq!(headers["x-sluice-cache"], "hit");
//! ```

mod identity;
mod outcome;

pub use identity::{ANONYMOUS, CREDENTIAL_HEADERS, Identity};
pub use outcome::{
    CacheOutcome, Outcome, PromptTokens, X_SLUICE_ATTEMPTS, X_SLUICE_CACHE, X_SLUICE_CACHE_TIER,
    X_SLUICE_PROMPT_TOKENS_ORIGINAL, X_SLUICE_PROMPT_TOKENS_SENT, X_SLUICE_UPSTREAM,
};
