//! sluice with async-openai, the Rust OpenAI SDK.
//!
//! The SDK is used exactly as against OpenAI: only its API base points at
//! sluice. Four steps: a chat completion, a streamed one, an embedding, and the
//! first chat completion sent again, which sluice answers from its cache.
//! async-openai does not expose response headers, so the repeat goes out as a
//! plain HTTP request (reqwest) with the same JSON body and key, to read
//! `x-sluice-cache`.
//!
//! ```sh
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 cargo run --example async_openai
//! ```
//!
//! Fails (exit code 1) when the repeated request is not a cache hit.

#![expect(clippy::print_stdout, reason = "an example prints what it gets")]

use std::io::Write;

use anyhow::{Context, bail};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use futures_util::StreamExt;

/// A chat completion request with one user message.
fn chat_request(prompt: &str) -> anyhow::Result<CreateChatCompletionRequest> {
    Ok(CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessage::from(prompt).into()])
        .build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base_url =
        std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080/v1".into());
    let api_key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| "sk-example".into());

    // Both HTTP clients are built without a TLS crypto provider of their own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(&base_url)
            .with_api_key(&api_key),
    );

    // 1. A chat completion.
    let plain = chat_request("Say hello to sluice from Rust.")?;
    let answer = client.chat().create(plain.clone()).await?;
    let text = answer
        .choices
        .first()
        .and_then(|choice| choice.message.content.clone())
        .unwrap_or_default();
    println!("chat: {text}");

    // 2. A streamed chat completion, printed as the deltas arrive.
    let mut stream = client
        .chat()
        .create_stream(chat_request("Stream a short greeting from Rust.")?)
        .await?;
    print!("stream: ");
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        if let Some(delta) = chunk?
            .choices
            .first()
            .and_then(|choice| choice.delta.content.as_deref())
        {
            print!("{delta}");
            stdout.flush()?;
        }
    }
    println!();

    // 3. An embedding.
    let embedding = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("text-embedding-3-small")
                .input("sluice caches answers")
                .build()?,
        )
        .await?;
    let dimensions = embedding.data.first().map_or(0, |e| e.embedding.len());
    println!("embedding: {dimensions} dimensions");

    // 4. The first chat completion again: a cache hit. The same body and key
    // make the same cache entry.
    let repeat = reqwest::Client::builder()
        .build()?
        .post(format!(
            "{}/chat/completions",
            base_url.trim_end_matches('/')
        ))
        .bearer_auth(&api_key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&plain)?)
        .send()
        .await?
        .error_for_status()?;
    let cache = repeat
        .headers()
        .get("x-sluice-cache")
        .context("the answer has no x-sluice-cache header: is OPENAI_BASE_URL a sluice?")?
        .to_str()?
        .to_owned();
    println!("x-sluice-cache: repeat={cache}");
    if cache != "hit" {
        bail!("expected the repeated request to be a cache hit, got {cache:?}");
    }
    Ok(())
}
