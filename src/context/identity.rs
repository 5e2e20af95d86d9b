//! Who sent a request: the key the cache scope, the rate limits and the
//! sessions are kept under.

use std::fmt;
use std::sync::Arc;

/// Request headers that carry a client's credential when sluice passes it
/// through (no `[auth]`): together they are the client's identity.
pub const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "api-key",
    "openai-organization",
    "openai-project",
];

/// The identity of requests that carry no credential.
pub const ANONYMOUS: &str = "anonymous";

/// A client, as sluice tells clients apart: by the name of the client key it
/// presented (`[auth]` on), or by a digest of the credential headers it
/// passed through. Two requests with the same identity share cache entries
/// (`scope = "key"`), rate limits and session ids; different identities
/// share none of them. Cheap to clone; in the extensions of every `/v1/`
/// request below the auth layer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    digest: [u8; 32],
    /// For logs and metrics: the key's name, `client-<8 hex digits of the
    /// digest>` for a passed-through credential, or `anonymous`. Never the
    /// credential itself.
    name: Arc<str>,
}

impl Identity {
    /// The identity of a client key named `name`: every key with that name
    /// is the same client (keys can be rotated without losing its cache or
    /// limits).
    pub fn named(name: &str) -> Identity {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"key-name\0");
        hasher.update(name.as_bytes());
        Identity {
            digest: *hasher.finalize().as_bytes(),
            name: Arc::from(name),
        }
    }

    /// The identity of whoever presents exactly these credential headers
    /// (all requests without any share the `anonymous` identity).
    pub fn of_credentials(headers: &http::HeaderMap) -> Identity {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"credentials\0");
        let mut any = false;
        for name in CREDENTIAL_HEADERS {
            for value in headers.get_all(name) {
                any = true;
                // Length-prefixed, so no two header sets hash alike.
                hasher.update(&(name.len() as u64).to_le_bytes());
                hasher.update(name.as_bytes());
                hasher.update(&(value.len() as u64).to_le_bytes());
                hasher.update(value.as_bytes());
            }
        }
        let digest = *hasher.finalize().as_bytes();
        let name = if any {
            let hex = blake3::Hash::from_bytes(digest).to_hex();
            Arc::from(format!("client-{}", &hex[..8]))
        } else {
            Arc::from(ANONYMOUS)
        };
        Identity { digest, name }
    }

    /// 32 bytes that differ between identities: what keys are built from.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Lower-case hex of the digest, for Redis keys.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.digest).to_hex().to_string()
    }

    /// A name safe to log (never the credential).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Identity").field(&self.name).finish()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn credentials_tell_clients_apart() {
        let a = Identity::of_credentials(&headers(&[("authorization", "Bearer sk-a")]));
        let b = Identity::of_credentials(&headers(&[("authorization", "Bearer sk-b")]));
        let a2 = Identity::of_credentials(&headers(&[
            ("authorization", "Bearer sk-a"),
            ("content-type", "application/json"),
        ]));
        assert_ne!(a, b);
        assert_eq!(a, a2, "other headers do not matter");
        let org = Identity::of_credentials(&headers(&[
            ("authorization", "Bearer sk-a"),
            ("openai-organization", "org-1"),
        ]));
        assert_ne!(a, org);
        assert!(a.name().starts_with("client-") && a.name().len() == 15);
        assert!(!a.name().contains("sk-a"));
        assert!(!format!("{a:?}").contains("sk-a"));
    }

    #[test]
    fn no_credential_is_anonymous_and_names_differ_from_credentials() {
        let none = Identity::of_credentials(&http::HeaderMap::new());
        assert_eq!(none.name(), "anonymous");
        assert_eq!(none, Identity::of_credentials(&http::HeaderMap::new()));
        let named = Identity::named("anonymous");
        assert_ne!(
            none, named,
            "a key named like a passthrough client is another client"
        );
        assert_eq!(Identity::named("team-a"), Identity::named("team-a"));
        assert_ne!(Identity::named("team-a"), Identity::named("team-b"));
    }
}
