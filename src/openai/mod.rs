//! Wire formats of the OpenAI-compatible API that sluice understands.

pub mod endpoint;
pub mod error;
pub mod request;

pub use endpoint::Endpoint;
pub use request::ApiRequest;
