//! Request paths under `/v1/`: which ones sluice forwards, and where they go.
//!
//! A path is forwarded only when it stays under `/v1/` as every server on the
//! way could read it. sluice refuses rather than normalises (RFC 3986
//! §5.2.4 would remove dot segments first): any `.` or `..` segment is
//! refused, however it is spelled — `%2e` for a dot, `\`, `%2f` or `%5c`
//! as a separator (servers that decode them split there), `;parameters`
//! after it (servers that drop them see a bare `..`). SDKs never send such
//! paths, and a path that means one thing to sluice and another to the
//! upstream is how a request with sluice's upstream key lands outside the
//! API. Empty segments (`//`) and anything in the query pass as sent.
//!
//! ```
//! use sluice::openai::path::{inside_v1, join};
//! assert!(inside_v1("/v1/chat/completions"));
//! assert!(!inside_v1("/v1/%2E%2e/admin"));
//! let uri: http::Uri = "/v1/models?after=..".parse().unwrap();
//! assert_eq!(join("/openai", &uri).as_deref(), Ok("/openai/models?after=.."));
//! ```

/// A path that leaves `/v1/` (or is not under it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the path {path} leaves /v1/")]
pub struct Outside {
    pub path: String,
}

/// Whether `path` (as received, still percent-encoded) is under `/v1/` and
/// has no dot segment in any spelling.
pub fn inside_v1(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    // The usual path has neither dots nor escapes nor backslashes.
    if !rest.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return true;
    }
    !segments(rest).any(is_dot_segment)
}

/// `base_path` followed by the request's path after `/v1`, and its query:
/// where the request goes on the upstream. Refuses a path that
/// [`inside_v1`] refuses, so nothing outside the API is ever joined.
pub fn join(base_path: &str, uri: &http::Uri) -> Result<String, Outside> {
    let path = uri.path();
    if !inside_v1(path) {
        return Err(Outside {
            path: path.to_owned(),
        });
    }
    // `inside_v1` checked the prefix: the rest starts with `/`.
    let rest = &path[3..];
    let query = uri.query();
    let mut joined =
        String::with_capacity(base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    joined.push_str(base_path);
    joined.push_str(rest);
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    Ok(joined)
}

/// The segments of `path`, split at `/` and `\`, and at `%2f` / `%5c`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split(['/', '\\']).flat_map(|part| {
        let mut rest = Some(part);
        std::iter::from_fn(move || {
            let current = rest?;
            match encoded_separator(current) {
                Some(at) => {
                    rest = Some(&current[at + 3..]);
                    Some(&current[..at])
                }
                None => {
                    rest = None;
                    Some(current)
                }
            }
        })
    })
}

/// Where `%2f` or `%5c` (any case) first occurs in `segment`.
fn encoded_separator(segment: &str) -> Option<usize> {
    let bytes = segment.as_bytes();
    bytes.windows(3).position(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    })
}

/// `.` or `..`, with dots possibly written `%2e`, before any `;parameters`.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    let mut dots = 0;
    let mut rest = name.as_bytes();
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => rest = tail,
            _ => return false,
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(base: &str, uri: &str) -> Result<String, Outside> {
        let uri: http::Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
        join(base, &uri)
    }

    #[test]
    fn ordinary_paths_join_with_their_query() {
        assert_eq!(
            joined("/v1", "/v1/chat/completions?x=1&y=%20z").as_deref(),
            Ok("/v1/chat/completions?x=1&y=%20z")
        );
        assert_eq!(joined("", "/v1/models").as_deref(), Ok("/models"));
        assert_eq!(
            joined("/v1", "/v1/files/file-1%2Fx").as_deref(),
            Ok("/v1/files/file-1%2Fx")
        );
        // Dots inside a name are not dot segments.
        assert_eq!(
            joined("/v1", "/v1/models/gpt-4.1-mini").as_deref(),
            Ok("/v1/models/gpt-4.1-mini")
        );
        assert_eq!(
            joined("/v1", "/v1/files/a...b/.well").as_deref(),
            Ok("/v1/files/a...b/.well")
        );
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for path in [
            "/v1/../secret",
            "/v1/./models",
            "/v1/models/../../admin/keys",
            "/v1/models/..",
            "/v1/%2e%2e/secret",
            "/v1/%2E%2E/secret",
            "/v1/.%2e/secret",
            "/v1/%2e/secret",
            "/v1/..%2fsecret",
            "/v1/..%2Fsecret",
            "/v1/models%2f..%2f..%2fsecret",
            "/v1/..%5csecret",
            "/v1/..;/secret",
            "/v1/..;x=1/secret",
            "/v1/.;/models",
        ] {
            assert!(!inside_v1(path), "{path} let through");
            assert!(joined("/v1", path).is_err(), "{path} joined");
        }
    }

    #[test]
    fn backslashes_separate_segments() {
        // `\` is not valid in a URI, but a server may still split at it.
        assert!(!inside_v1("/v1/..\\secret"));
        assert!(!inside_v1("/v1/models\\..\\..\\x"));
        assert!(inside_v1("/v1/files\\x"));
    }

    #[test]
    fn double_slashes_and_queries_pass_as_sent() {
        assert_eq!(joined("/v1", "/v1//models").as_deref(), Ok("/v1//models"));
        assert_eq!(
            joined("/base", "/v1/models?path=../../x&y=%2e%2e").as_deref(),
            Ok("/base/models?path=../../x&y=%2e%2e")
        );
    }

    #[test]
    fn only_paths_under_v1() {
        assert!(!inside_v1("/v1"));
        assert!(!inside_v1("/v2/models"));
        assert!(!inside_v1("/v1..%2f/x"));
        assert!(!inside_v1("/healthz"));
        assert!(inside_v1("/v1/"));
        assert_eq!(
            joined("/v1", "/v2/x"),
            Err(Outside {
                path: "/v2/x".into()
            })
        );
    }
}
