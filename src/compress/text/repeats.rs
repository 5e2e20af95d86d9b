//! Repeated log lines folded into one line and a marker.

use super::*;

/// Collapses runs of three or more identical lines.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    pub(crate) run: Option<Run>,
}

#[derive(Debug)]
pub(crate) struct Run {
    /// The text compared: the line without trailing whitespace.
    pub(crate) key: Range<usize>,
    pub(crate) first: Emit,
    pub(crate) second: Option<Emit>,
    pub(crate) count: usize,
    /// The line ending of the last line of the run, for the marker.
    pub(crate) terminator: &'static str,
}

impl Repeats {
    /// Adds a non-blank line, compared by `key`, written as `emit`, ended by
    /// `terminator` (used if the marker replaces it).
    pub(crate) fn push(
        &mut self,
        out: &mut Output<'_>,
        key: Range<usize>,
        emit: Emit,
        terminator: &'static str,
    ) {
        let source = out.source;
        if is_marker(&source[key.clone()]) {
            self.flush(out);
            emit.write(out);
            return;
        }
        if let Some(run) = self.run.as_mut() {
            if source[run.key.clone()] == source[key.clone()] {
                run.count += 1;
                run.second.get_or_insert(emit);
                run.terminator = terminator;
                return;
            }
        }
        self.flush(out);
        self.run = Some(Run {
            key,
            first: emit,
            second: None,
            count: 1,
            terminator,
        });
    }

    pub(crate) fn flush(&mut self, out: &mut Output<'_>) {
        let Some(run) = self.run.take() else {
            return;
        };
        run.first.write(out);
        if run.count >= 3 {
            out.push_str(&marker(run.count - 1));
            out.push_str(run.terminator);
        } else if let Some(second) = run.second {
            second.write(out);
        }
    }
}

pub(crate) fn marker(repeats: usize) -> String {
    format!("{MARKER_PREFIX}{repeats}{MARKER_SUFFIX}")
}

pub(crate) fn is_marker(line: &str) -> bool {
    line.strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.strip_suffix(MARKER_SUFFIX))
        .is_some_and(|count| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
}

/// A log fence's body with repeated lines collapsed; everything else,
/// line endings included, is kept as it is.
pub(crate) fn collapse_log(out: &mut Output<'_>, body: Range<usize>) {
    let source = out.source;
    let mut repeats = Repeats::default();
    let mut pos = body.start;
    while pos < body.end {
        let line = Line::at(source, pos);
        pos = line.end;
        let whole = Emit {
            range: line.start..line.end,
            terminator: "",
        };
        let end = trim_blank_end(source.as_bytes(), line.start, line.content_end);
        if end == line.start {
            repeats.flush(out);
            whole.write(out);
        } else {
            repeats.push(out, line.start..end, whole, line.terminator());
        }
    }
    repeats.flush(out);
}
