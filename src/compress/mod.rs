//! Compression: prompt texts shortened without changing what they say.
//!
//! `[compress] level`, or the request's `x-sluice-compress`:
//! - `safe` (the default): [`text::safe`] on every text of the prompt
//!   (messages, Responses instructions and input, completion prompts):
//!   trailing whitespace, runs of blank lines, CRLF, never inside fenced
//!   code, never leading indentation;
//! - `aggressive`: [`text::aggressive`] (comments and blank lines out of
//!   fenced code of known languages, repeated log lines collapsed), and any
//!   single text past `max_prompt_tokens` cut to its head (`head_ratio`)
//!   and tail with a marker saying how many tokens were left out;
//! - `off`: the bytes sent upstream are the client's bytes.
//!
//! Only messages that change are re-serialized; the others keep their
//! exact JSON text. Large requests are compressed on the blocking pool.

pub mod text;

mod service;

pub use service::*;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::body::Body;
use crate::config::{CompressConfig, CompressLevel};
use crate::error::Error;
use crate::ingress::Overrides;
use crate::observe::COMPRESS_REQUESTS_TOTAL;
use crate::openai::{ApiRequest, Endpoint, content};
use crate::tokens::prompt::Content;
use crate::tokens::service::{Rewritten, inline, rewrite};
use crate::tokens::{Counter, Encoding, Original, head_tail, prompt};

/// What one compression works with.
#[derive(Debug, Clone)]
pub struct Compressor {
    level: CompressLevel,
    max_prompt_tokens: u64,
    head_ratio: f64,
    counter: Arc<Counter>,
}

impl Compressor {
    pub fn new(config: &CompressConfig, counter: Arc<Counter>) -> Compressor {
        Compressor {
            level: config.level,
            max_prompt_tokens: config.max_prompt_tokens as u64,
            head_ratio: config.head_ratio,
            counter,
        }
    }

    /// `api` compressed at `level`; `None` when nothing changed.
    pub fn run(&self, api: &ApiRequest, level: CompressLevel) -> Option<ApiRequest> {
        if level == CompressLevel::Off {
            return None;
        }
        let prompt_fields = ["messages", "input", "instructions", "prompt"];
        if level == CompressLevel::Safe
            && !prompt_fields
                .iter()
                .filter_map(|field| api.raw(field))
                .any(safe_may_change)
        {
            return None;
        }
        let encoding = self.counter.encoding(api.model());
        let texts = |text: &str| self.text(level, encoding, text, None);
        let item_texts =
            |text: &str, language: Option<&str>| self.text(level, encoding, text, language);
        let mut request = api.clone();
        let mut changed = false;
        match api.endpoint() {
            Endpoint::ChatCompletions => {
                if let Some(messages) = items(&api.items("messages"), &item_texts) {
                    request.set_raw("messages", messages);
                    changed = true;
                }
            }
            Endpoint::Responses => {
                if let Some(Ok(instructions)) = api.get::<String>("instructions")
                    && let Some(new) = texts(&instructions)
                {
                    changed |= request.set("instructions", &new).is_ok();
                }
                match api.raw("input").and_then(prompt::first_byte) {
                    Some(b'"') => {
                        if let Some(Ok(input)) = api.get::<String>("input")
                            && let Some(new) = texts(&input)
                        {
                            changed |= request.set("input", &new).is_ok();
                        }
                    }
                    Some(b'[') => {
                        if let Some(input) = items(&api.items("input"), &item_texts) {
                            request.set_raw("input", input);
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
            Endpoint::Completions => match api.get::<Value>("prompt").and_then(Result::ok) {
                Some(Value::String(prompt)) => {
                    if let Some(new) = texts(&prompt) {
                        changed |= request.set("prompt", &new).is_ok();
                    }
                }
                Some(Value::Array(mut prompts)) => {
                    let mut any = false;
                    for prompt in &mut prompts {
                        if let Value::String(text) = prompt
                            && let Some(new) = texts(text)
                        {
                            *text = new;
                            any = true;
                        }
                    }
                    if any {
                        changed |= request.set("prompt", &prompts).is_ok();
                    }
                }
                _ => {}
            },
            Endpoint::Embeddings | Endpoint::Other => {}
        }
        changed.then_some(request)
    }

    /// One text compressed; `None` when unchanged. `language`: the text is
    /// a source file in that language (a tool's output).
    fn text(
        &self,
        level: CompressLevel,
        encoding: Encoding,
        original: &str,
        language: Option<&str>,
    ) -> Option<String> {
        let compressed = match (level, language) {
            (CompressLevel::Off, _) => return None,
            (CompressLevel::Safe, _) => return changed(original, text::safe(original)),
            (CompressLevel::Aggressive, Some(language)) => text::code(language, original),
            (CompressLevel::Aggressive, None) => text::aggressive(original),
        };
        // A token is at least one byte: shorter texts cannot be too long.
        if compressed.len() as u64 > self.max_prompt_tokens
            && self.counter.text(encoding, &compressed) > self.max_prompt_tokens
        {
            let cut = head_tail(
                encoding,
                &compressed,
                self.max_prompt_tokens,
                self.head_ratio,
            );
            return Some(cut.into_owned());
        }
        changed(original, compressed)
    }
}

/// Whether `safe` could change a text inside this JSON: a cheap scan of the
/// JSON text, so most prompts skip reading their messages. It may say yes
/// for nothing (then the texts are looked at); it never says no when `safe`
/// would change something. `safe` changes only carriage returns, spaces or
/// tabs at the end of a line or of the text, and runs of blank lines; in
/// JSON text those show as `\r`, a space or `\t` before `\n` or before
/// a string's closing quote, three `\n` in a row, or a `\u` escape (which
/// can spell any of them).
fn safe_may_change(json: &[u8]) -> bool {
    use memchr::memmem;
    const SIGNS: [&[u8]; 5] = [b"\\r", b" \\n", b"\\t\\n", b"\\n\\n\\n", b"\\u"];
    if SIGNS.iter().any(|sign| memmem::find(json, sign).is_some()) {
        return true;
    }
    // A space or tab closing a string: `␠"` or `\t"` followed by what
    // follows a value (`,` `}` `]` `:` or whitespace).
    let closes = |at: usize| {
        json.get(at + 1).is_none_or(|next| {
            matches!(
                next,
                b',' | b'}' | b']' | b':' | b' ' | b'\n' | b'\r' | b'\t'
            )
        })
    };
    memmem::find_iter(json, b" \"").any(|i| closes(i + 1))
        || memmem::find_iter(json, b"\\t\"").any(|i| closes(i + 2))
}

/// `new` when it differs from `original` (a borrowed result is a prefix of
/// the original: it differs when shorter).
fn changed(original: &str, new: Cow<'_, str>) -> Option<String> {
    (new.len() != original.len() || matches!(new, Cow::Owned(_))).then(|| new.into_owned())
}

/// A JSON array of messages or items with their texts compressed; `None`
/// when none changed. Unchanged items keep their exact JSON text. A tool
/// result whose call named a source file is compressed as that file's
/// language (`language` of the path).
fn items(items: &[&str], texts: &dyn Fn(&str, Option<&str>) -> Option<String>) -> Option<Bytes> {
    let mut out: Vec<Cow<'_, str>> = Vec::with_capacity(items.len());
    let mut changed = false;
    // Call id -> the language of the file its arguments name.
    let mut languages: HashMap<String, &'static str> = HashMap::new();
    for &item in items {
        // Read without building a tree: most messages have nothing to change.
        let Ok(fields) = serde_json::from_str::<Fields<'_>>(item) else {
            out.push(Cow::Borrowed(item));
            continue;
        };
        fields.remember_calls(&mut languages);
        if content::cache_marked(item) {
            // A client's cache breakpoint: its bytes stay as sent.
            out.push(Cow::Borrowed(item));
            continue;
        }
        let language = fields.result_of().and_then(|id| languages.get(id).copied());
        if !fields.texts().any(|t| texts(t, language).is_some()) {
            out.push(Cow::Borrowed(item));
            continue;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(item) else {
            out.push(Cow::Borrowed(item));
            continue;
        };
        if content::rewrite_texts(&mut value, &mut |t| texts(t, language)) {
            changed = true;
            out.push(Cow::Owned(value.to_string()));
        } else {
            out.push(Cow::Borrowed(item));
        }
    }
    changed.then(|| Bytes::from(content::json_array(&out)))
}

/// The fields of a message or item compression looks at, borrowed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    output: Option<Content<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Function<'a> {
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl Fields<'_> {
    /// The call id this item answers, for a tool result.
    fn result_of(&self) -> Option<&str> {
        self.tool_call_id.as_deref().or_else(|| {
            (self.kind.as_deref() == Some("function_call_output"))
                .then_some(self.call_id.as_deref())
                .flatten()
        })
    }

    /// The texts [`content::rewrite_texts`] would visit.
    fn texts(&self) -> impl Iterator<Item = &str> {
        [&self.content, &self.output]
            .into_iter()
            .flatten()
            .flat_map(|content| match content {
                Content::Text(text) => vec![text.as_ref()],
                Content::Parts(parts) => parts.iter().filter_map(|p| p.text()).collect(),
                Content::Other(_) => Vec::new(),
            })
    }

    /// Notes the language of the file each tool call of this item names.
    fn remember_calls(&self, languages: &mut HashMap<String, &'static str>) {
        let calls = self.tool_calls.iter().flatten().map(|c| {
            (
                c.id.as_deref(),
                c.function.as_ref().and_then(|f| f.arguments.as_deref()),
            )
        });
        let function_call = (self.kind.as_deref() == Some("function_call"))
            .then_some((self.call_id.as_deref(), self.arguments.as_deref()));
        for (id, arguments) in calls.chain(function_call) {
            let (Some(id), Some(arguments)) = (id, arguments) else {
                continue;
            };
            if let Some(language) = serde_json::from_str::<Value>(arguments)
                .ok()
                .as_ref()
                .and_then(path_argument)
                .and_then(language)
            {
                languages.insert(id.to_owned(), language);
            }
        }
    }
}

/// The file path among a tool call's arguments.
fn path_argument(arguments: &Value) -> Option<&str> {
    const KEYS: [&str; 6] = [
        "path",
        "file_path",
        "filepath",
        "file",
        "filename",
        "target_file",
    ];
    let object = arguments.as_object()?;
    KEYS.iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str))
}

/// The fence tag for a source file's path, by its name or extension.
fn language(path: &str) -> Option<&'static str> {
    let name = path
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    if name == "dockerfile" || name.starts_with("dockerfile.") {
        return Some("dockerfile");
    }
    if matches!(name.as_str(), "makefile" | "gnumakefile") {
        return Some("makefile");
    }
    let extension = name.rsplit_once('.')?.1;
    Some(match extension {
        "rs" => "rust",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hh" | "hpp" | "hxx" => "cpp",
        "m" | "mm" => "objc",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "scala" | "sc" => "scala",
        "swift" => "swift",
        "go" => "go",
        "js" | "mjs" | "cjs" | "jsx" => "js",
        "ts" | "mts" | "cts" | "tsx" => "ts",
        "cs" => "csharp",
        "php" => "php",
        "css" => "css",
        "scss" => "scss",
        "less" => "less",
        "py" | "pyi" => "python",
        "rb" => "ruby",
        "sh" | "bash" | "zsh" => "sh",
        "yaml" | "yml" => "yaml",
        "toml" => "toml",
        "pl" | "pm" => "perl",
        "r" => "r",
        "sql" => "sql",
        "lua" => "lua",
        "hs" => "haskell",
        "mk" => "makefile",
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
