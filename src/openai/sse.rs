//! Server-sent events framing: splitting a recorded stream into the `data:`
//! payloads of its events.

/// The `data` payload of every event in `body`, in order. Multi-line data is
/// joined with `\n`; comments and other fields are skipped; a trailing
/// event without its blank line is included.
pub fn data_events(body: &[u8]) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    for line in body.split(|b| *b == b'\n') {
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
    fn writes_events() {
        let mut out = Vec::new();
        event(b"[DONE]", &mut out);
        assert_eq!(out, b"data: [DONE]\n\n");
        assert_eq!(data_events(&out), vec![b"[DONE]".to_vec()]);
    }
}
