//! Client authentication: who a request comes from.
//!
//! With `[auth] client_keys_env` set, every `/v1/` request must carry
//! `Authorization: Bearer <one of the client keys>`; a missing or unknown
//! key gets 401 in OpenAI's shape. The presented key is compared with every
//! configured one in constant time (as blake3 digests), then removed: the
//! upstream gets its own key (`api_key_env`), never the client's. Without
//! `[auth]`, the client's credential headers pass through untouched.
//!
//! Either way the request leaves here with an [`Identity`] in its
//! extensions: the key's name, or a digest of the passed-through credential.
//! The cache scope, the rate limits and the sessions are kept per identity.

mod service;

pub use service::*;

use http::header;

pub use crate::context::{ANONYMOUS, CREDENTIAL_HEADERS, Identity};

use crate::body::Body;
use crate::config::ClientKey;
use crate::error::Error;

pub use crate::error::AuthError;

/// The configured client keys, as digests: the keys themselves are not kept.
#[derive(Debug)]
pub struct Keys {
    entries: Vec<(blake3::Hash, Identity)>,
}

impl Keys {
    /// The identity whose key is `token`. Every configured key is compared
    /// (no early exit), each comparison in constant time.
    fn find(&self, token: &[u8]) -> Option<&Identity> {
        let presented = blake3::hash(token);
        let mut found = None;
        for (digest, identity) in &self.entries {
            if *digest == presented {
                found = Some(identity);
            }
        }
        found
    }
}

/// The identity of the client key in `headers`, whose credential headers are
/// then removed so they never reach an upstream.
fn authenticate(keys: &Keys, headers: &mut http::HeaderMap) -> Result<Identity, AuthError> {
    let token = bearer(headers).ok_or(AuthError::Missing)?;
    let identity = keys.find(token).cloned().ok_or(AuthError::Invalid)?;
    headers.remove(header::AUTHORIZATION);
    headers.remove("api-key");
    Ok(identity)
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, parse_client_keys};
    use http::{Request, Response};
    use tower::Layer;
    use tower::ServiceExt;

    fn layer(value: &str) -> AuthLayer {
        AuthLayer::new(&parse_client_keys(value).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Runs `req` through `layer` over an inner service that answers with
    /// the identity it saw and whether an Authorization header reached it.
    async fn run(layer: &AuthLayer, req: Request<Body>) -> Result<(String, bool), Error> {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let who = req
                .extensions()
                .get::<Identity>()
                .map(|i| i.name().to_owned())
                .unwrap_or_default();
            let forwarded = req.headers().contains_key(header::AUTHORIZATION)
                || req.headers().contains_key("api-key");
            let mut response = Response::new(crate::body::empty());
            response
                .headers_mut()
                .insert("who", who.parse().unwrap_or_else(|e| panic!("{e}")));
            response.headers_mut().insert(
                "forwarded",
                http::HeaderValue::from_static(if forwarded { "yes" } else { "no" }),
            );
            Ok::<_, Error>(response)
        });
        let response = layer.layer(inner).oneshot(req).await?;
        let who = response.headers()["who"].to_str().unwrap_or_default();
        Ok((who.to_owned(), response.headers()["forwarded"] == "yes"))
    }

    fn request(authorization: Option<&str>) -> Request<Body> {
        let mut builder = Request::post("/v1/chat/completions");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder
            .header("api-key", "sk-client-azure")
            .body(crate::body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_known_key_names_the_client_and_is_not_forwarded() {
        let auth = layer("team-a:sk-aaaa, team-b:sk-bbbb,sk-cccc,");
        let (who, forwarded) = run(&auth, request(Some("Bearer sk-bbbb")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who, "team-b");
        assert!(!forwarded, "the client's credentials stay here");
        let (who, _) = run(&auth, request(Some("bearer   sk-aaaa ")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who, "team-a", "scheme in any case, spaces trimmed");
        let (who, _) = run(&auth, request(Some("Bearer sk-cccc")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(who.starts_with("key-") && !who.contains("cccc"), "{who}");
    }

    #[tokio::test]
    async fn missing_or_unknown_keys_are_refused() {
        let auth = layer("team-a:sk-aaaa");
        for (value, missing) in [
            (None, true),
            (Some("Bearer "), true),
            (Some("Basic sk-aaaa"), true),
            (Some("sk-aaaa"), true),
            (Some("Bearer sk-aaab"), false),
            (Some("Bearer sk-aaaa2"), false),
            (Some("Bearer team-a:sk-aaaa"), false),
        ] {
            match run(&auth, request(value)).await {
                Err(Error::Auth(AuthError::Missing)) if missing => {}
                Err(Error::Auth(AuthError::Invalid)) if !missing => {}
                other => panic!("{value:?}: {:?}", other.map(|(w, _)| w)),
            }
        }
    }

    #[tokio::test]
    async fn without_keys_credentials_pass_and_identify_the_client() {
        let auth = AuthLayer::new(&[]);
        let (a, forwarded) = run(&auth, request(Some("Bearer sk-x")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(forwarded);
        let (b, _) = run(&auth, request(Some("Bearer sk-y")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.starts_with("client-") && b.starts_with("client-") && a != b);
    }

    #[test]
    fn keys_sharing_a_name_are_one_client() {
        let keys = [
            ClientKey {
                name: "svc".into(),
                key: Secret::new("old-key"),
            },
            ClientKey {
                name: "svc".into(),
                key: Secret::new("new-key"),
            },
        ];
        let auth = AuthLayer::new(&keys);
        let AuthLayer::Enabled(keys) = &auth else {
            panic!("keys")
        };
        assert_eq!(keys.find(b"old-key"), keys.find(b"new-key"));
        assert!(keys.find(b"old-key").is_some());
        assert!(keys.find(b"other").is_none());
    }
}
