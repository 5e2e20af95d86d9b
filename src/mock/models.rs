//! `GET /v1/models` and `GET /v1/models/{id}`. The mock answers for any model name, so
//! retrieving an unlisted id returns it as well.

use http::Response;
use serde::Serialize;

use super::body::MockBody;
use super::reply::{self, ApiError};

/// Models listed by `GET /v1/models`.
pub(crate) const LISTED: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-4.1",
    "o4-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

const CREATED: u64 = 1_686_935_002;

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> Model<'a> {
    fn new(id: &'a str) -> Self {
        Self {
            id,
            object: "model",
            created: CREATED,
            owned_by: "system",
        }
    }
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

/// The model list.
pub(crate) fn list() -> Result<Response<MockBody>, ApiError> {
    reply::json(&List {
        object: "list",
        data: LISTED.iter().map(|id| Model::new(id)).collect(),
    })
}

/// One model.
pub(crate) fn retrieve(id: &str) -> Result<Response<MockBody>, ApiError> {
    reply::json(&Model::new(id))
}
