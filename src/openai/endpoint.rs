//! Which API endpoint a request is for.

use http::Method;

/// The endpoints sluice understands and optimises, plus everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// Any other `/v1/` path: passed through untouched.
    Other,
}

impl Endpoint {
    /// Classifies a `/v1/` request. Only `POST` to the four paths is understood.
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        if method != Method::POST {
            return Endpoint::Other;
        }
        match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            _ => Endpoint::Other,
        }
    }

    /// Whether sluice parses and optimises requests to this endpoint.
    pub fn is_understood(self) -> bool {
        self != Endpoint::Other
    }

    /// A short, bounded name for metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_only_post_to_known_paths() {
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/chat/completions"),
            Endpoint::ChatCompletions
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/completions"),
            Endpoint::Completions
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/embeddings"),
            Endpoint::Embeddings
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/responses"),
            Endpoint::Responses
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/chat/completions"),
            Endpoint::Other
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/responses/resp_1/cancel"),
            Endpoint::Other
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/files"),
            Endpoint::Other
        );
    }
}
