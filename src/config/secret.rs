//! Keeping secrets out of logs and printed configs: the [`Secret`] wrapper and
//! [`mask_url`], which hides the password part of URLs such as a Redis URL.

use std::borrow::Cow;
use std::fmt;

use serde::{Serialize, Serializer};

/// What a hidden value is shown as.
const MASK: &str = "****";

/// A secret string (an API key). `Debug`, `Display` and `Serialize` show `****`; only
/// [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// Query parameters whose values are masked (Redis URLs may carry `?password=`).
const SECRET_QUERY_KEYS: &[&str] = &[
    "password", "pass", "passwd", "pwd", "secret", "token", "key", "api_key", "apikey",
];

/// `url` with its password masked: `redis://:hunter2@host:6379/0` becomes
/// `redis://:****@host:6379/0` and `https://user:pw@h/v1` becomes `https://user:****@h/v1`.
/// Userinfo without a `:` is masked whole (it is often a token), and so are the values of
/// password-like query parameters. Strings without `://` are returned unchanged.
///
/// Userinfo is taken to end at the last `@`, so a password containing `/` or `?` is still
/// masked; the price is that a rare `@` in a path masks more than needed.
pub fn mask_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..=colon]);
            }
            out.push_str(MASK);
            &rest[at..]
        }
        None => rest,
    };
    mask_query(after_userinfo, &mut out);
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

/// Appends `rest` (host, path, query, fragment) to `out`, masking secret query values.
fn mask_query(rest: &str, out: &mut String) {
    let Some(question) = rest.find('?') else {
        out.push_str(rest);
        return;
    };
    let (before, query_and_fragment) = rest.split_at(question + 1);
    out.push_str(before);
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(hash) => query_and_fragment.split_at(hash),
        None => (query_and_fragment, ""),
    };
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _))
                if SECRET_QUERY_KEYS
                    .iter()
                    .any(|key| name.eq_ignore_ascii_case(key)) =>
            {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(fragment);
}

/// serde `serialize_with` for URL fields: writes the URL with its password masked.
pub(super) fn serialize_masked_url<S: Serializer>(
    url: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&mask_url(url))
}

/// [`serialize_masked_url`] for an optional URL (`None` is left out).
pub(super) fn serialize_masked_opt_url<S: Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&mask_url(url)),
        None => serializer.serialize_none(),
    }
}
