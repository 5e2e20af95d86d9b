//! An upstream's streamed answer, as the cache recorder sees it: the body
//! arrives in pieces split at arbitrary points, is gathered, then framed
//! into SSE events and assembled into the plain answer it amounts to (each
//! endpoint's way), and a stored answer is replayed as a stream again.
//!
//! Input: one byte per split (the piece lengths), a 0 byte, then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::openai::{chat_stream, other_streams, sse};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(0);
    let (lengths, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    // Gathered piece by piece, the way the recorder appends what it relays.
    let mut recorded = Vec::new();
    let mut rest = body;
    for &length in lengths.iter().cycle().take(body.len()) {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(length).min(rest.len()).max(1));
        recorded.extend_from_slice(piece);
        rest = tail;
    }
    recorded.extend_from_slice(rest);
    assert_eq!(recorded, body);

    let events = sse::data_events(&recorded);
    // Framing a payload and reading it back gives the payload.
    if let Some(first) = events.first().filter(|e| !e.contains(&b'\n') && !e.contains(&b'\r')) {
        let mut framed = Vec::new();
        sse::event(first, &mut framed);
        assert_eq!(sse::data_events(&framed), [first.clone()]);
    }
    if let Some(answer) = chat_stream::assemble(&recorded) {
        for usage in [false, true] {
            if let Some(replayed) = chat_stream::synthesize(&answer, usage) {
                let _ = chat_stream::assemble(&replayed);
            }
        }
    }
    if let Some(answer) = other_streams::assemble_completion(&recorded) {
        if let Some(replayed) = other_streams::synthesize_completion(&answer, true) {
            let _ = other_streams::assemble_completion(&replayed);
        }
    }
    if let Some(answer) = other_streams::assemble_response(&recorded) {
        if let Some(replayed) = other_streams::synthesize_response(&answer) {
            let _ = other_streams::assemble_response(&replayed);
        }
    }
});
