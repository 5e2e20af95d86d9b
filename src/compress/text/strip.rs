//! Removing the comments the lexer found from a code block.

use super::*;

/// A code fence's body without its comments and blank lines, or unchanged
/// when the lexer is unsure.
pub(crate) fn strip_code(out: &mut Output<'_>, fence: &Fence<'_>, lang: Lang, body: Range<usize>) {
    let source = out.source;
    let code = &source[body.clone()];
    let Ok(lexed) = Lexer::new(lang, code.as_bytes()).run() else {
        out.push_source(body);
        return;
    };
    let comments = trailing_comments(code.as_bytes(), &lexed.comments);
    let strip = Strip {
        code,
        strings: &lexed.strings,
        comments: &comments,
        fence,
    };
    if strip.walk(|_| {}).is_none() {
        out.push_source(body);
        return;
    }
    let base = body.start;
    // Cannot fail: the same walk just succeeded.
    let _ = strip.walk(|kept| out.push_source(base + kept.start..base + kept.end));
}

/// The comments, among `comments`, that nothing but whitespace and other
/// such comments follows on the line where they end.
pub(crate) fn trailing_comments(code: &[u8], comments: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut trailing = vec![false; comments.len()];
    // The start of the next comment, and whether it is trailing.
    let mut next: Option<(usize, bool)> = None;
    for (index, comment) in comments.iter().enumerate().rev() {
        let limit = next.map_or(code.len(), |(start, _)| start);
        let rest = &code[comment.end..limit];
        trailing[index] = match memchr(b'\n', rest) {
            Some(newline) => is_blank(&rest[..newline]),
            None => next.is_none_or(|(_, trailing)| trailing) && is_blank(rest),
        };
        next = Some((comment.start, trailing[index]));
    }
    comments
        .iter()
        .zip(trailing)
        .filter(|(_, trailing)| *trailing)
        .map(|(comment, _)| comment.clone())
        .collect()
}

/// How the lines of a code block come out once its trailing comments and
/// blank lines are removed.
pub(crate) struct Strip<'a> {
    pub(crate) code: &'a str,
    /// Multi-line string literals: their lines are kept even when blank.
    pub(crate) strings: &'a [Range<usize>],
    /// The comments to remove, all trailing.
    pub(crate) comments: &'a [Range<usize>],
    pub(crate) fence: &'a Fence<'a>,
}

impl Strip<'_> {
    /// Calls `keep` with each range of the code that stays, in order.
    /// Returns `None`, possibly after some calls, when stripping is unsafe.
    pub(crate) fn walk(&self, mut keep: impl FnMut(Range<usize>)) -> Option<()> {
        let bytes = self.code.as_bytes();
        let mut comments = self.comments.iter().peekable();
        let mut strings = self.strings.iter().peekable();
        // The previous line ended with a backslash: it continues on this one.
        let mut continued = false;
        let mut pos = 0;
        while pos < bytes.len() {
            let line = Line::at(self.code, pos);
            pos = line.end;
            while comments
                .next_if(|comment| comment.end < line.start)
                .is_some()
            {}
            while strings.next_if(|string| string.end <= line.start).is_some() {}
            let cut = comments
                .peek()
                // Starting on this line, or earlier and running into it.
                .filter(|comment| comment.start < line.content_end)
                .map(|comment| comment.start.max(line.start));
            let in_string = strings
                .peek()
                .is_some_and(|string| string.start < line.start && line.start < string.end);
            let content = &bytes[line.start..line.content_end];
            match cut {
                Some(_) if continued => return None,
                None if continued || in_string || !is_blank(content) => keep(line.start..line.end),
                None => {}
                Some(cut) => {
                    let kept_end = trim_blank_end(bytes, line.start, cut);
                    let kept = &bytes[line.start..kept_end];
                    // A backslash would now join the next line to this one;
                    // a closing fence would end the block early.
                    if kept.last() == Some(&b'\\') || self.fence.closes(kept) {
                        return None;
                    }
                    if !kept.is_empty() {
                        keep(line.start..kept_end);
                        keep(line.content_end..line.end);
                    }
                }
            }
            continued = cut.is_none() && content.trim_ascii_end().last() == Some(&b'\\');
        }
        Some(())
    }
}
