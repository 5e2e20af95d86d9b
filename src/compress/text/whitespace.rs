//! Whitespace rules of prose: line endings, trailing blanks, runs of
//! blank lines.

use super::*;

/// The lines outside fences, trimmed, with blank runs collapsed and, for
/// [`Level::Aggressive`], repeated lines collapsed.
#[derive(Debug)]
pub(crate) struct Prose {
    pub(crate) level: Level,
    pub(crate) repeats: Repeats,
    /// The last line written was blank.
    pub(crate) after_blank: bool,
}

impl Prose {
    pub(crate) fn new(level: Level) -> Prose {
        Prose {
            level,
            repeats: Repeats::default(),
            after_blank: false,
        }
    }

    pub(crate) fn line(&mut self, out: &mut Output<'_>, line: Line) {
        let end = trim_blank_end(out.source.as_bytes(), line.start, line.content_end);
        // A trailing `\r` goes with the other trailing whitespace, and the
        // line ending becomes `\n`. Two trailing spaces (a Markdown hard line
        // break) go too: a model reads a soft break the same way.
        let terminator = if line.has_newline() { "\n" } else { "" };
        if end == line.start {
            self.repeats.flush(out);
            if !self.after_blank {
                out.push_str(terminator);
            }
            self.after_blank = true;
            return;
        }
        self.after_blank = false;
        let emit = Emit {
            range: line.start..end,
            terminator,
        };
        match self.level {
            Level::Safe => emit.write(out),
            Level::Aggressive => self.repeats.push(out, line.start..end, emit, terminator),
        }
    }

    /// Ends a stretch of prose, before a fence or at the end of the text.
    pub(crate) fn end(&mut self, out: &mut Output<'_>) {
        self.repeats.flush(out);
        self.after_blank = false;
    }
}

/// What to write for one line: a range of the source and a line ending.
#[derive(Debug, Clone)]
pub(crate) struct Emit {
    pub(crate) range: Range<usize>,
    pub(crate) terminator: &'static str,
}

impl Emit {
    pub(crate) fn write(&self, out: &mut Output<'_>) {
        out.push_source(self.range.clone());
        out.push_str(self.terminator);
    }
}
