//! Server-sent events, the one place sluice reads and writes their framing:
//! the relay's closing error event, the usage reader's event boundaries
//! (`report::usage`), the cache recorder's and the replay's events
//! (`openai::chat_stream`, `openai::other_streams`).

/// The `data` payload of every event in `body`, in order. Multi-line data is
/// joined with `\n`; comments and other fields are skipped; a trailing
/// event without its blank line is included.
pub fn data_events(body: &[u8]) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    for end in ends {
        let line = &body[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(payload) = data.take() {
                events.push(payload);
            }
            continue;
        }
        let Some(rest) = line.strip_prefix(b"data:") else {
            continue;
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        match &mut data {
            Some(payload) => {
                payload.push(b'\n');
                payload.extend_from_slice(rest);
            }
            None => data = Some(rest.to_vec()),
        }
    }
    if let Some(payload) = data {
        events.push(payload);
    }
    events
}

/// Offsets just past each event's blank line.
pub fn event_ends(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(i) = memchr::memchr(b'\n', &bytes[at..]) {
            let nl = at + i;
            at = nl + 1;
            let next = bytes.get(nl + 1).copied();
            let next2 = bytes.get(nl + 2).copied();
            match (next, next2) {
                (Some(b'\n'), _) => {
                    at = nl + 2;
                    return Some(at);
                }
                (Some(b'\r'), Some(b'\n')) => {
                    at = nl + 3;
                    return Some(at);
                }
                _ => {}
            }
        }
        None
    })
}

/// The `data:` payload of one event (lines joined with `\n`).
pub fn data_of(event: &[u8]) -> Option<Vec<u8>> {
    data_events(event).into_iter().next()
}

/// One SSE event of type `name` carrying `payload` as its data
/// (`event: error` and the like).
pub fn named_event(name: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    event(payload, out);
}

/// One SSE event carrying `payload` as its data.
pub fn event(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events() {
        let body = b"data: {\"a\":1}\n\n: keep-alive comment\n\nevent: x\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]";
        let events = data_events(body);
        assert_eq!(
            events,
            vec![
                b"{\"a\":1}".to_vec(),
                b"line1\nline2".to_vec(),
                b"[DONE]".to_vec()
            ]
        );
    }

    #[test]
    fn finds_event_ends_with_either_line_ending() {
        let body = b"data: a\n\ndata: b\r\n\r\ndata: c";
        assert_eq!(event_ends(body).collect::<Vec<_>>(), [9, 20]);
        let mut out = Vec::new();
        named_event("error", b"{}", &mut out);
        assert_eq!(out, b"event: error\ndata: {}\n\n");
        assert_eq!(data_of(&out), Some(b"{}".to_vec()));
    }

    #[test]
    fn writes_events() {
        let mut out = Vec::new();
        event(b"[DONE]", &mut out);
        assert_eq!(out, b"data: [DONE]\n\n");
        assert_eq!(data_events(&out), vec![b"[DONE]".to_vec()]);
    }
}
