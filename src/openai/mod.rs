//! Wire formats of the OpenAI-compatible API that sluice understands.

pub mod chat_stream;
pub mod content;
pub mod endpoint;
pub mod error;
pub mod other_streams;
pub mod path;
pub mod request;
pub mod sse;

pub use endpoint::Endpoint;
pub use request::ApiRequest;
