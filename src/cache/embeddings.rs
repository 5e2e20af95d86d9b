//! Embeddings item by item: a list `input` is looked up one item at a time,
//! only the misses go upstream (as one batched request), and the answer is
//! put back together in the client's order with the right `index` values and
//! usage.
//!
//! Each item is stored under the key of the same request with that item as
//! its only input, so a later request for any mix of old and new texts pays
//! only for the new ones.

use crate::report::usage::Reported;
use std::sync::Arc;

use super::CacheOutcome;

use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::Service;

use super::directives::Directives;
use super::key::CacheKey;
use super::store::Entry;
use super::{Cache, mark};
use crate::body::{self, Body};
use crate::error::Error;
use crate::openai::ApiRequest;
use crate::tokens::PromptTokens;

/// Largest embeddings answer read back to split into items; a larger one is
/// relayed as it is and not stored.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The items of an embeddings `input`, or `None` when it is not a list form
/// sluice splits (then the request is cached whole).
pub fn items(input: &Value) -> Option<Vec<Value>> {
    match input {
        Value::String(_) => Some(vec![input.clone()]),
        Value::Array(items) if items.is_empty() => None,
        // One text as token ids.
        Value::Array(items) if items.iter().all(Value::is_number) => Some(vec![input.clone()]),
        Value::Array(items) if items.iter().all(|i| i.is_string() || i.is_array()) => {
            Some(items.clone())
        }
        _ => None,
    }
}

/// Serves an embeddings request item by item.
pub async fn handle<S>(
    cache: Arc<Cache>,
    mut inner: S,
    mut req: Request<Body>,
    api: ApiRequest,
    inputs: Vec<Value>,
    directives: Directives,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    // One key per item: the request with that item as its only input.
    let mut keys = Vec::with_capacity(inputs.len());
    for item in &inputs {
        let mut single = api.clone();
        let key = single
            .set("input", item)
            .and_then(|()| cache.key(&req, &single));
        match key {
            Ok(key) => keys.push(key),
            Err(_) => return inner.call(req).await.map(|r| mark(r, CacheOutcome::Bypass)),
        }
    }
    let mut found: Vec<Option<Arc<Entry>>> = Vec::with_capacity(inputs.len());
    for key in &keys {
        let entry = if directives.no_cache {
            None
        } else {
            cache.lookup(key, &directives).await.map(|(entry, _)| entry)
        };
        found.push(entry);
    }
    if found.iter().all(Option::is_some) {
        let items = found
            .iter()
            .flatten()
            .map(|e| item_of(e))
            .collect::<Option<Vec<_>>>();
        match items {
            Some(items) => {
                if let Some(tally) = req.extensions().get::<crate::report::Tally>() {
                    let tokens = items.iter().map(|i| i.tokens).sum();
                    let usage = Reported {
                        prompt: tokens,
                        total: tokens,
                        ..Reported::default()
                    };
                    tally.served_from_cache(usage, false);
                }
                return Ok(mark(answer(items, StatusCode::OK, None), CacheOutcome::Hit));
            }
            // An entry that does not read back: fetch everything afresh.
            None => found.iter_mut().for_each(|f| *f = None),
        }
    }
    let missing: Vec<usize> = (0..inputs.len()).filter(|i| found[*i].is_none()).collect();

    // Only the misses go upstream, in one request.
    let mut batch = api.clone();
    let batch_input = Value::Array(missing.iter().map(|i| inputs[*i].clone()).collect());
    if batch.set("input", &batch_input).is_err() {
        return inner.call(req).await.map(|r| mark(r, CacheOutcome::Bypass));
    }
    req.extensions_mut().insert(batch);
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    let response = inner.call(req).await?;
    if response.status() != StatusCode::OK
        || response.headers().contains_key(header::CONTENT_ENCODING)
    {
        return Ok(mark(response, CacheOutcome::Miss));
    }
    let (parts, upstream_body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(upstream_body, MAX_ANSWER_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Err(crate::error::UpstreamError::Failed {
                upstream: "(embeddings)".to_owned(),
                reason: format!("reading the embeddings answer: {error}"),
            }
            .into());
        }
    };
    let Some(mut fresh) = split(&bytes, missing.len()) else {
        // Not an answer sluice can split: relay it as it came.
        return Ok(mark(
            Response::from_parts(parts, body::full(bytes)),
            CacheOutcome::Miss,
        ));
    };
    if let Some(counted) = parts
        .extensions
        .get::<crate::context::Outcome>()
        .and_then(|o| o.prompt_tokens)
    {
        share_count(&mut fresh, counted.sent);
    }
    let ttl = directives.ttl.unwrap_or(cache.ttl);
    let mut fresh = fresh.into_iter();
    let mut items = Vec::with_capacity(inputs.len());
    for (i, entry) in found.into_iter().enumerate() {
        let item = match entry {
            Some(entry) => item_of(&entry),
            None => fresh
                .next()
                .inspect(|item| store(&cache, keys[i], item, ttl)),
        };
        let Some(item) = item else {
            return Ok(mark(
                Response::from_parts(parts, body::full(bytes)),
                CacheOutcome::Miss,
            ));
        };
        items.push(item);
    }
    let mut response = answer(items, parts.status, Some(parts.headers));
    let prompt = crate::context::Outcome::of(&mut response).prompt_tokens;
    *response.extensions_mut() = parts.extensions;
    // The whole request's count, stored items' shares included.
    crate::context::Outcome::of(&mut response).prompt_tokens = prompt;
    Ok(mark(response, CacheOutcome::Miss))
}

/// One item of an embeddings answer: its data object (index 0), the model
/// that made it, and the tokens it cost.
#[derive(Debug, Clone)]
struct Item {
    data: Value,
    model: Value,
    tokens: u64,
    /// Its share of sluice's own count of the request's prompt, which the
    /// token headers report (`None` when nothing counted it).
    counted: Option<u64>,
}

/// Splits an upstream answer for `expected` inputs into items, ordered by
/// their `index`; usage is shared out by the length of each embedding's
/// input (the upstream reports one total).
fn split(bytes: &[u8], expected: usize) -> Option<Vec<Item>> {
    let answer: Value = serde_json::from_slice(bytes).ok()?;
    let data = answer.get("data")?.as_array()?;
    if data.len() != expected {
        return None;
    }
    let mut ordered: Vec<Option<Value>> = vec![None; expected];
    for element in data {
        let index = usize::try_from(element.get("index")?.as_u64()?).ok()?;
        *ordered.get_mut(index)? = Some(element.clone());
    }
    let model = answer.get("model").cloned().unwrap_or(Value::Null);
    let total = answer
        .get("usage")
        .and_then(|u| u.get("prompt_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let share = total / expected as u64;
    let mut remainder = total % expected as u64;
    ordered
        .into_iter()
        .map(|element| {
            let mut data = element?;
            data.as_object_mut()?.insert("index".into(), json!(0));
            let extra = u64::from(remainder > 0);
            remainder = remainder.saturating_sub(1);
            Some(Item {
                data,
                model: model.clone(),
                tokens: share + extra,
                counted: None,
            })
        })
        .collect()
}

fn store(cache: &Cache, key: CacheKey, item: &Item, ttl: std::time::Duration) {
    let body = json!({"model": item.model, "data": item.data});
    let Ok(body) = serde_json::to_vec(&body) else {
        return;
    };
    cache.store(
        key,
        Entry {
            body: body.into(),
            content_type: http::HeaderValue::from_static("application/json"),
            stream: None,
            stored_at: std::time::SystemTime::now(),
            ttl,
            usage: Reported {
                prompt: item.tokens,
                total: item.tokens,
                ..Reported::default()
            },
            prompt: item.counted.map(|n| PromptTokens {
                original: n,
                sent: n,
            }),
        },
    );
}

/// Shares sluice's count of the batch sent upstream out to its items, in
/// proportion to the upstream's count of each, so a later request made of
/// the same items (a hit) reports the count this one reported.
fn share_count(items: &mut [Item], counted: u64) {
    let upstream: u64 = items.iter().map(|i| i.tokens).sum();
    let n = items.len() as u64;
    let last = items.len().saturating_sub(1);
    let mut left = counted;
    for (i, item) in items.iter_mut().enumerate() {
        let share = if i == last {
            left
        } else if upstream > 0 {
            // `counted * tokens / upstream`, in u128 so it cannot overflow.
            let exact = u128::from(counted) * u128::from(item.tokens) / u128::from(upstream);
            u64::try_from(exact).unwrap_or(u64::MAX).min(left)
        } else {
            (counted / n).min(left)
        };
        left -= share;
        item.counted = Some(share);
    }
}

fn item_of(entry: &Entry) -> Option<Item> {
    let stored: Value = serde_json::from_slice(&entry.body).ok()?;
    Some(Item {
        data: stored.get("data")?.clone(),
        model: stored.get("model").cloned().unwrap_or(Value::Null),
        tokens: entry.usage.total,
        counted: entry.prompt.map(|p| p.sent),
    })
}

/// The client's answer: items in its order, `index` set to their position,
/// usage the sum of the items'.
fn answer(
    items: Vec<Item>,
    status: StatusCode,
    headers: Option<http::HeaderMap>,
) -> Response<Body> {
    let model = items
        .first()
        .map(|i| i.model.clone())
        .unwrap_or(Value::Null);
    let tokens: u64 = items.iter().map(|i| i.tokens).sum();
    // sluice's own count when every item has its share of one: what the
    // request that stored them reported.
    let counted: Option<u64> = items.iter().map(|i| i.counted).sum();
    let data: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(index, mut item)| {
            if let Some(obj) = item.data.as_object_mut() {
                obj.insert("index".into(), json!(index));
            }
            item.data
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let mut response = Response::new(body::full(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = status;
    if let Some(mut headers) = headers {
        headers.remove(header::CONTENT_LENGTH);
        *response.headers_mut() = headers;
    }
    // Put together from items: nothing pruned or compressed.
    crate::context::Outcome::of(&mut response).prompt_tokens = counted.map(|n| PromptTokens {
        original: n,
        sent: n,
    });
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_forms() {
        assert_eq!(items(&json!("a")).map(|i| i.len()), Some(1));
        assert_eq!(items(&json!(["a", "b"])).map(|i| i.len()), Some(2));
        assert_eq!(items(&json!([1, 2, 3])).map(|i| i.len()), Some(1));
        assert_eq!(items(&json!([[1, 2], [3]])).map(|i| i.len()), Some(2));
        assert!(items(&json!([])).is_none());
        assert!(items(&json!({"x": 1})).is_none());
        assert!(items(&json!(["a", 1])).is_none());
    }

    #[test]
    fn split_orders_by_index_and_shares_usage() {
        let answer = json!({
            "object": "list", "model": "e",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.2]},
                {"object": "embedding", "index": 0, "embedding": [0.1]},
            ],
            "usage": {"prompt_tokens": 5, "total_tokens": 5}
        });
        let items = split(answer.to_string().as_bytes(), 2).unwrap_or_default();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].data["embedding"], json!([0.1]));
        assert_eq!(items[1].data["index"], 0);
        assert_eq!(items.iter().map(|i| i.tokens).sum::<u64>(), 5);
        assert!(split(answer.to_string().as_bytes(), 3).is_none());
    }
}
