//! Reading text line by line, fenced code blocks, and building the
//! output (borrowed until something changes).

use super::*;

/// The result being built: borrowed from the source for as long as it is a
/// prefix of it, owned from the first difference on.
#[derive(Debug)]
pub(crate) struct Output<'a> {
    pub(crate) source: &'a str,
    pub(crate) owned: Option<String>,
    /// While `owned` is `None`, the result is `source[..borrowed]`.
    pub(crate) borrowed: usize,
}

impl<'a> Output<'a> {
    pub(crate) fn new(source: &'a str) -> Output<'a> {
        Output {
            source,
            owned: None,
            borrowed: 0,
        }
    }

    /// Appends `source[range]`.
    pub(crate) fn push_source(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        if self.owned.is_none() && range.start == self.borrowed {
            self.borrowed = range.end;
            return;
        }
        let source = self.source;
        self.owned_mut().push_str(&source[range]);
    }

    /// Appends `text`.
    pub(crate) fn push_str(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.owned.is_none() && self.source[self.borrowed..].starts_with(text) {
            self.borrowed += text.len();
            return;
        }
        self.owned_mut().push_str(text);
    }

    pub(crate) fn owned_mut(&mut self) -> &mut String {
        let (source, borrowed) = (self.source, self.borrowed);
        self.owned.get_or_insert_with(|| {
            let mut owned = String::with_capacity(source.len());
            owned.push_str(&source[..borrowed]);
            owned
        })
    }

    pub(crate) fn finish(self) -> Cow<'a, str> {
        match self.owned {
            Some(owned) => Cow::Owned(owned),
            None => Cow::Borrowed(&self.source[..self.borrowed]),
        }
    }
}

/// One line of a text: `start..content_end` is its content, without the
/// `\n` or `\r\n` that ends it; `end` is past that line ending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub(crate) start: usize,
    pub(crate) content_end: usize,
    pub(crate) end: usize,
}

impl Line {
    pub(crate) fn at(text: &str, start: usize) -> Line {
        let bytes = text.as_bytes();
        let Some(offset) = memchr(b'\n', &bytes[start..]) else {
            return Line {
                start,
                content_end: text.len(),
                end: text.len(),
            };
        };
        let newline = start + offset;
        let content_end = if newline > start && bytes[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        Line {
            start,
            content_end,
            end: newline + 1,
        }
    }

    pub(crate) fn content<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.content_end]
    }

    pub(crate) fn has_newline(&self) -> bool {
        self.end > self.content_end
    }

    pub(crate) fn terminator(&self) -> &'static str {
        match self.end - self.content_end {
            0 => "",
            1 => "\n",
            _ => "\r\n",
        }
    }
}

/// A fenced code block's opening fence.
#[derive(Debug)]
pub(crate) struct Fence<'a> {
    /// `` ` `` or `~`.
    pub(crate) marker: u8,
    pub(crate) len: usize,
    /// The first word of the info string.
    pub(crate) tag: &'a str,
}

impl<'a> Fence<'a> {
    /// The fence `line` opens, if it is an opening fence.
    pub(crate) fn open(line: &'a str) -> Option<Fence<'a>> {
        let bytes = line.as_bytes();
        let indent = leading(bytes, b' ');
        if indent > 3 {
            return None;
        }
        let marker = *bytes.get(indent)?;
        if marker != b'`' && marker != b'~' {
            return None;
        }
        let len = leading(&bytes[indent..], marker);
        if len < 3 {
            return None;
        }
        let info = &line[indent + len..];
        if marker == b'`' && info.contains('`') {
            return None;
        }
        Some(Fence {
            marker,
            len,
            tag: language_tag(info),
        })
    }

    /// Whether `line` (without its line ending) closes this fence.
    pub(crate) fn closes(&self, line: &[u8]) -> bool {
        let indent = leading(line, b' ');
        if indent > 3 {
            return false;
        }
        let len = leading(&line[indent..], self.marker);
        len >= self.len && is_blank(&line[indent + len..])
    }

    /// The body of the block whose content starts at `from`, and its
    /// closing line (empty when the block runs to the end of the text).
    pub(crate) fn block(&self, text: &str, from: usize) -> (Range<usize>, Range<usize>) {
        let mut pos = from;
        while pos < text.len() {
            let line = Line::at(text, pos);
            if self.closes(line.content(text).as_bytes()) {
                return (from..line.start, line.start..line.end);
            }
            pos = line.end;
        }
        (from..text.len(), text.len()..text.len())
    }
}

/// The language tag of an info string: its first word, read through
/// `rust,ignore` and `{.python}` spellings.
pub(crate) fn language_tag(info: &str) -> &str {
    let word = info.split_ascii_whitespace().next().unwrap_or_default();
    let word = word.trim_start_matches(['{', '.']);
    word.split([',', '}']).next().unwrap_or_default()
}

pub(crate) fn write_body(
    out: &mut Output<'_>,
    fence: &Fence<'_>,
    body: Range<usize>,
    level: Level,
) {
    if level == Level::Safe {
        out.push_source(body);
    } else if let Some(lang) = Lang::from_tag(fence.tag) {
        strip_code(out, fence, lang, body);
    } else if LOG_TAGS
        .iter()
        .any(|tag| tag.eq_ignore_ascii_case(fence.tag))
    {
        collapse_log(out, body);
    } else {
        out.push_source(body);
    }
}
