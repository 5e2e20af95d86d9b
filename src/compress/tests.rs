use super::*;
use serde_json::json;

fn compressor(max_prompt_tokens: usize) -> Compressor {
    let config = CompressConfig {
        max_prompt_tokens,
        ..CompressConfig::default()
    };
    Compressor::new(&config, Arc::new(Counter::new(Encoding::O200kBase)))
}

fn parse(endpoint: Endpoint, body: &Value) -> ApiRequest {
    ApiRequest::parse(endpoint, Bytes::from(body.to_string())).unwrap_or_else(|e| panic!("{e}"))
}

fn sent(request: Option<ApiRequest>) -> Value {
    let request = request.unwrap_or_else(|| panic!("nothing compressed"));
    serde_json::from_slice(&request.to_bytes()).unwrap_or_default()
}

#[test]
fn off_and_clean_prompts_change_nothing() {
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "tidy\n\ntext"}]});
    let api = parse(Endpoint::ChatCompletions, &body);
    for level in [
        CompressLevel::Off,
        CompressLevel::Safe,
        CompressLevel::Aggressive,
    ] {
        assert!(compressor(12_000).run(&api, level).is_none(), "{level:?}");
    }
    let messy =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a  \r\n\r\n\r\nb"}]});
    assert!(
        compressor(12_000)
            .run(
                &parse(Endpoint::ChatCompletions, &messy),
                CompressLevel::Off
            )
            .is_none()
    );
}

#[test]
fn only_changed_messages_are_rewritten() {
    let raw = r#"{"model":"gpt-4o","messages":[{"role" : "system","content":"keep   me"},{"role":"user","content":"trim me   \n\n\n\nend"}]}"#;
    let api = ApiRequest::parse(
        Endpoint::ChatCompletions,
        Bytes::from_static(raw.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let request = compressor(12_000).run(&api, CompressLevel::Safe);
    let bytes = request.map(|r| r.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    // The untouched message keeps its exact text, spacing included.
    assert!(
        text.contains(r#"{"role" : "system","content":"keep   me"}"#),
        "{text}"
    );
    assert!(text.contains(r#""content":"trim me\n\nend""#), "{text}");
}

#[test]
fn tool_outputs_of_source_files_lose_their_comments_when_aggressive() {
    let file =
        "//! Module docs.\n\n/// Adds one.\nfn add(x: u32) -> u32 {\n    x + 1 // the one\n}\n";
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "read it"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"src/add.rs\"}"}},
            {"id": "c2", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"notes.txt\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": file},
        {"role": "tool", "tool_call_id": "c2", "content": file},
    ]});
    let api = parse(Endpoint::ChatCompletions, &body);
    let out = sent(compressor(12_000).run(&api, CompressLevel::Aggressive));
    assert_eq!(
        out["messages"][2]["content"],
        "fn add(x: u32) -> u32 {\n    x + 1\n}\n"
    );
    // Not a known language: only the prose rules (nothing to do here).
    assert_eq!(out["messages"][3]["content"], file);
    // Safe never strips code.
    assert!(compressor(12_000).run(&api, CompressLevel::Safe).is_none());

    let responses = json!({"model": "gpt-4.1", "input": [
        {"type": "function_call", "call_id": "f", "name": "read_file", "arguments": "{\"file_path\":\"app/main.py\"}"},
        {"type": "function_call_output", "call_id": "f", "output": "# setup\nimport os  # os\n\n\nprint(os.name)\n"},
    ]});
    let out = sent(compressor(12_000).run(
        &parse(Endpoint::Responses, &responses),
        CompressLevel::Aggressive,
    ));
    assert_eq!(out["input"][1]["output"], "import os\nprint(os.name)\n");
}

#[test]
fn aggressive_cuts_a_text_past_max_prompt_tokens() {
    let log: String = (0..2000).map(|i| format!("line {i}: ok\n")).collect();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": log}]});
    let api = parse(Endpoint::ChatCompletions, &body);
    let out = sent(compressor(300).run(&api, CompressLevel::Aggressive));
    let text = out["messages"][0]["content"].as_str().unwrap_or_default();
    assert!(Encoding::O200kBase.count(text) <= 300);
    assert!(text.starts_with("line 0: ok\n") && text.ends_with("line 1999: ok\n"));
    // Safe never cuts.
    assert!(compressor(300).run(&api, CompressLevel::Safe).is_none());
}

#[test]
fn responses_and_completions_texts() {
    let body = json!({"model": "gpt-4.1", "instructions": "be  \n\n\n\nbrief", "input": "hi   "});
    let out = sent(compressor(12_000).run(&parse(Endpoint::Responses, &body), CompressLevel::Safe));
    assert_eq!(out["instructions"], "be\n\nbrief");
    assert_eq!(out["input"], "hi");
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["a  ", "b", [1, 2]]});
    let out =
        sent(compressor(12_000).run(&parse(Endpoint::Completions, &body), CompressLevel::Safe));
    assert_eq!(out["prompt"], json!(["a", "b", [1, 2]]));
}

#[test]
fn languages_by_path() {
    for (path, tag) in [
        ("src/lib.rs", Some("rust")),
        ("a/b/Dockerfile", Some("dockerfile")),
        ("Makefile", Some("makefile")),
        ("web/App.TSX", Some("ts")),
        ("README.md", None),
        ("noextension", None),
    ] {
        assert_eq!(language(path), tag, "{path}");
    }
}

#[test]
fn the_safe_prefilter_never_misses_a_change() {
    let texts = [
        "plain",
        "a \n b",
        "a\t\nb",
        "a\r\nb",
        "end ",
        "end\t",
        "a\n\n\nb",
        "a\n \n\nb",
        "\u{a0}x",
        "ok\n\nok",
        "x  ",
        " lead",
        "in \"quotes \" here",
    ];
    for text in texts {
        for json in [
            json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string(),
            serde_json::to_string_pretty(
                &json!({"messages": [{"content": [{"type": "text", "text": text}]}]}),
            )
            .unwrap_or_default(),
        ] {
            let changes = text::safe(text).len() != text.len();
            if changes {
                assert!(safe_may_change(json.as_bytes()), "{text:?} in {json}");
            }
        }
    }
    // Compact JSON of clean texts: no scan needed.
    let clean = json!({"messages": [{"role": "user", "content": "tidy\n\ntext"}]}).to_string();
    assert!(!safe_may_change(clean.as_bytes()));
}
