//! Pure text transforms that make prompts shorter: [`safe`] and
//! [`aggressive`].
//!
//! Both work on Markdown-ish text such as chat messages, line by line, and
//! treat [fenced code blocks](#fenced-code-blocks) apart from the prose
//! around them.
//!
//! # `safe`
//!
//! Only changes that cannot alter meaning, and only outside fenced code:
//!
//! - `\r\n` becomes `\n`, and a `\r` left at the end of a line is dropped;
//! - trailing spaces and tabs are removed at the end of every line;
//! - a run of two or more blank lines (empty once trailing whitespace is
//!   gone) becomes one blank line. Runs at the start or end of the text are
//!   collapsed the same way, not removed.
//!
//! Leading indentation and spaces inside a line are never touched. Inside a
//! fenced code block nothing changes, byte for byte (`\r\n` included), and
//! the fence lines themselves are kept as they are.
//!
//! One Markdown construct is affected: a hard line break written as two
//! trailing spaces becomes a soft break (the two lines are rendered as one
//! paragraph line). That is accepted: to a model, both read the same.
//!
//! # `aggressive`
//!
//! Everything `safe` does, plus:
//!
//! - in fenced code whose language is known (see the table below), comments
//!   and blank lines are removed;
//! - in logs, a run of N >= 3 identical consecutive lines (compared without
//!   their trailing whitespace) becomes the line once, followed by a marker
//!   line `[… previous line repeated K more times]` where K = N - 1. Runs of
//!   two stay. Logs are the prose outside fences, and fences tagged `text`,
//!   `txt`, `log`, `console`, `output`, `plaintext`, or not tagged at all.
//!   Blank lines are never collapsed this way, and a marker line is never
//!   collapsed or changed again.
//!
//! Fences with any other tag are left alone.
//!
//! Comments are removed only where they end a line (`x = 1 // one` becomes
//! `x = 1`) or fill whole lines; a comment followed by code on the same line
//! (`f(/* arg */ 1)`) is kept, so that no two tokens are ever glued together.
//! The whitespace before a removed comment goes with it, a line left with
//! only whitespace is removed, and so are the blank lines of the block, except
//! inside multi-line string literals (docstrings, text blocks, YAML block
//! scalars...), which are never changed, and after a line ending with a
//! backslash (a line continuation). Leading indentation is kept exactly.
//!
//! | tag | comments removed |
//! |-----|------------------|
//! | `rust` `rs` | `//`, `/* */` (nested), doc comments too |
//! | `c` `h` `cpp` `c++` `cc` `hpp` `objc` `objective-c` | `//`, `/* */` |
//! | `java`, `kotlin` `kt`, `scala`, `swift`, `go` | `//`, `/* */` |
//! | `js` `javascript` `jsx` `ts` `typescript` `tsx` | `//`, `/* */` |
//! | `c#` `cs` `csharp` | `//`, `/* */` |
//! | `php` | `//`, `#`, `/* */` |
//! | `css`; `scss` `less` | `/* */`; `//` too |
//! | `python` `py`, `ruby` `rb`, `toml`, `r` | `#` (Ruby: `=begin`/`=end` too) |
//! | `sh` `bash` `shell` `zsh`, `yaml` `yml` | `#` starting a word |
//! | `perl` `pl`, `dockerfile` | `#` starting a line |
//! | `makefile` `make` | `#`, outside recipe lines |
//! | `sql` | `--`, `/* */` |
//! | `lua` | `--`, `--[[ ]]` |
//! | `haskell` `hs` | `--`, `{- -}` (nested) |
//!
//! The language tag is the first word of the fence's info string, compared
//! without regard to case; `rust,ignore` and `{.python}` are read as `rust`
//! and `python`.
//!
//! Each language has a small lexer that knows its string literals, so that a
//! comment marker inside a string is not taken for a comment: escapes, raw
//! strings (`r#"…"#`, `R"x(…)x"`, `@"…"`, `#"…"#`, `r"(…)"`), triple quotes,
//! template literals, char literals versus lifetimes (`'a'` and `'a`),
//! regular expression literals, Lua long brackets, SQL dollar quotes, Ruby
//! and Perl quote operators, and so on. Comments that carry meaning are
//! kept: shebangs (`#!` at the start of a line), Go directives
//! (`//go:build`...) and example output, TypeScript triple-slash directives
//! and `@ts-` pragmas, Python and Ruby magic comments, SQL optimizer hints,
//! Haskell pragmas, Dockerfile parser directives. Rust attributes and C
//! preprocessor lines are code, not comments, and are kept.
//!
//! When the lexer is unsure, the whole block is left unchanged: an
//! unterminated string or comment, a line comment ending with a backslash (a
//! line continuation in C and Make), here-documents, JSX, PHP mixed with
//! HTML, cgo preambles, Perl POD, `://` outside a string in a language with
//! `//` comments, a removal that would leave a line ending with a backslash
//! or looking like the closing fence.
//!
//! # Fenced code blocks
//!
//! As in CommonMark: a line indented by at most three spaces, then three or
//! more backticks or tildes, then an optional info string (which, for a
//! backtick fence, contains no backtick). The block ends at a line indented
//! by at most three spaces made of the same fence character, at least as
//! many times, and nothing but whitespace after. An unclosed block runs to
//! the end of the text.
//!
//! # Guarantees
//!
//! - `safe` cannot alter meaning (hard line breaks aside, see above), and
//!   never touches fenced code.
//! - Both functions are idempotent: `f(f(x)) == f(x)`. Neither changes which
//!   lines are fences.
//! - When nothing changes, the text comes back borrowed: no copy is made
//!   (and `safe` allocates nothing at all).
//! - Both run in time linear in the size of the text.
//!
//! # Limitations
//!
//! - Only fenced code is recognised as code. Indented code blocks, and fences
//!   inside block quotes or indented more than three spaces (in list items),
//!   are treated as prose: their trailing whitespace and blank lines are
//!   trimmed by both functions, and `aggressive` collapses their repeated
//!   lines.
//! - A lone `\r` inside a line (old Mac line endings, progress bars) is not a
//!   line break and is kept.
//! - The lexers are heuristic where the languages are context sensitive
//!   (regular expressions in JavaScript, Ruby and Perl, quotes in YAML plain
//!   scalars, `#` in shell words). They lean towards keeping text: when in
//!   doubt a comment is kept or the block is left as it is.
//! - In `sh`, `bash`, `shell` and `zsh` fences a root prompt (`# apt install
//!   x`) reads as a comment and goes; sessions belong in `console` fences.
//! - For very short lines the repeat marker can be longer than the lines it
//!   replaces.

use std::borrow::Cow;
use std::ops::Range;

use memchr::{memchr, memchr2, memchr3, memmem, memrchr};

/// Changes that cannot alter meaning, outside fenced code blocks only.
///
/// CRLF becomes LF, trailing spaces and tabs go, and runs of blank lines
/// become one blank line. See the [module documentation](self).
pub fn safe(text: &str) -> Cow<'_, str> {
    rewrite(text, Level::Safe)
}

/// `safe`, plus: comments and blank lines stripped inside fenced code of
/// known languages, repeated identical lines collapsed in logs.
///
/// See the [module documentation](self).
pub fn aggressive(text: &str) -> Cow<'_, str> {
    rewrite(text, Level::Aggressive)
}

/// Unfenced source code of the language `tag` names (a fence tag: `rust`,
/// `py`, …): its comments and blank lines stripped as [`aggressive`] strips
/// them inside a fence with that tag. Unchanged for unknown tags, or when
/// the lexer is unsure.
pub fn code<'a>(tag: &str, code: &'a str) -> Cow<'a, str> {
    if Lang::from_tag(tag).is_none() {
        return Cow::Borrowed(code);
    }
    // A fence longer than any run of backticks in the code: nothing in it
    // can close the fence early.
    let mut longest = 0;
    let mut run = 0;
    for byte in code.bytes() {
        run = if byte == b'`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest.max(2) + 1);
    let open = format!("{fence}{tag}\n");
    let close = format!("{fence}\n");
    let newline = if code.ends_with('\n') { "" } else { "\n" };
    let wrapped = format!("{open}{code}{newline}{close}");
    let Cow::Owned(stripped) = rewrite(&wrapped, Level::Aggressive) else {
        return Cow::Borrowed(code);
    };
    let inner = stripped
        .strip_prefix(open.as_str())
        .and_then(|rest| rest.strip_suffix(close.as_str()));
    match inner {
        Some(inner) if newline.is_empty() => Cow::Owned(inner.to_owned()),
        Some(inner) => Cow::Owned(inner.strip_suffix('\n').unwrap_or(inner).to_owned()),
        None => Cow::Borrowed(code),
    }
}

const MARKER_PREFIX: &str = "[… previous line repeated ";
const MARKER_SUFFIX: &str = " more times]";

/// Fence tags whose content is treated as a log by [`aggressive`].
const LOG_TAGS: &[&str] = &["", "text", "txt", "log", "console", "output", "plaintext"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Safe,
    Aggressive,
}

fn rewrite(text: &str, level: Level) -> Cow<'_, str> {
    let mut out = Output::new(text);
    let mut prose = Prose::new(level);
    let mut pos = 0;
    while pos < text.len() {
        let line = Line::at(text, pos);
        let Some(fence) = Fence::open(line.content(text)) else {
            prose.line(&mut out, line);
            pos = line.end;
            continue;
        };
        prose.end(&mut out);
        let (body, close) = fence.block(text, line.end);
        out.push_source(line.start..line.end);
        write_body(&mut out, &fence, body, level);
        out.push_source(close.clone());
        pos = close.end;
    }
    prose.end(&mut out);
    out.finish()
}

/// The result being built: borrowed from the source for as long as it is a
/// prefix of it, owned from the first difference on.
#[derive(Debug)]
struct Output<'a> {
    source: &'a str,
    owned: Option<String>,
    /// While `owned` is `None`, the result is `source[..borrowed]`.
    borrowed: usize,
}

impl<'a> Output<'a> {
    fn new(source: &'a str) -> Output<'a> {
        Output {
            source,
            owned: None,
            borrowed: 0,
        }
    }

    /// Appends `source[range]`.
    fn push_source(&mut self, range: Range<usize>) {
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
    fn push_str(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.owned.is_none() && self.source[self.borrowed..].starts_with(text) {
            self.borrowed += text.len();
            return;
        }
        self.owned_mut().push_str(text);
    }

    fn owned_mut(&mut self) -> &mut String {
        let (source, borrowed) = (self.source, self.borrowed);
        self.owned.get_or_insert_with(|| {
            let mut owned = String::with_capacity(source.len());
            owned.push_str(&source[..borrowed]);
            owned
        })
    }

    fn finish(self) -> Cow<'a, str> {
        match self.owned {
            Some(owned) => Cow::Owned(owned),
            None => Cow::Borrowed(&self.source[..self.borrowed]),
        }
    }
}

/// One line of a text: `start..content_end` is its content, without the
/// `\n` or `\r\n` that ends it; `end` is past that line ending.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    content_end: usize,
    end: usize,
}

impl Line {
    fn at(text: &str, start: usize) -> Line {
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

    fn content<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.content_end]
    }

    fn has_newline(&self) -> bool {
        self.end > self.content_end
    }

    fn terminator(&self) -> &'static str {
        match self.end - self.content_end {
            0 => "",
            1 => "\n",
            _ => "\r\n",
        }
    }
}

/// A fenced code block's opening fence.
#[derive(Debug)]
struct Fence<'a> {
    /// `` ` `` or `~`.
    marker: u8,
    len: usize,
    /// The first word of the info string.
    tag: &'a str,
}

impl<'a> Fence<'a> {
    /// The fence `line` opens, if it is an opening fence.
    fn open(line: &'a str) -> Option<Fence<'a>> {
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
    fn closes(&self, line: &[u8]) -> bool {
        let indent = leading(line, b' ');
        if indent > 3 {
            return false;
        }
        let len = leading(&line[indent..], self.marker);
        len >= self.len && is_blank(&line[indent + len..])
    }

    /// The body of the block whose content starts at `from`, and its
    /// closing line (empty when the block runs to the end of the text).
    fn block(&self, text: &str, from: usize) -> (Range<usize>, Range<usize>) {
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
fn language_tag(info: &str) -> &str {
    let word = info.split_ascii_whitespace().next().unwrap_or_default();
    let word = word.trim_start_matches(['{', '.']);
    word.split([',', '}']).next().unwrap_or_default()
}

fn write_body(out: &mut Output<'_>, fence: &Fence<'_>, body: Range<usize>, level: Level) {
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

/// The lines outside fences, trimmed, with blank runs collapsed and, for
/// [`Level::Aggressive`], repeated lines collapsed.
#[derive(Debug)]
struct Prose {
    level: Level,
    repeats: Repeats,
    /// The last line written was blank.
    after_blank: bool,
}

impl Prose {
    fn new(level: Level) -> Prose {
        Prose {
            level,
            repeats: Repeats::default(),
            after_blank: false,
        }
    }

    fn line(&mut self, out: &mut Output<'_>, line: Line) {
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
    fn end(&mut self, out: &mut Output<'_>) {
        self.repeats.flush(out);
        self.after_blank = false;
    }
}

/// What to write for one line: a range of the source and a line ending.
#[derive(Debug, Clone)]
struct Emit {
    range: Range<usize>,
    terminator: &'static str,
}

impl Emit {
    fn write(&self, out: &mut Output<'_>) {
        out.push_source(self.range.clone());
        out.push_str(self.terminator);
    }
}

/// Collapses runs of three or more identical lines.
#[derive(Debug, Default)]
struct Repeats {
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    /// The text compared: the line without trailing whitespace.
    key: Range<usize>,
    first: Emit,
    second: Option<Emit>,
    count: usize,
    /// The line ending of the last line of the run, for the marker.
    terminator: &'static str,
}

impl Repeats {
    /// Adds a non-blank line, compared by `key`, written as `emit`, ended by
    /// `terminator` (used if the marker replaces it).
    fn push(
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

    fn flush(&mut self, out: &mut Output<'_>) {
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

fn marker(repeats: usize) -> String {
    format!("{MARKER_PREFIX}{repeats}{MARKER_SUFFIX}")
}

fn is_marker(line: &str) -> bool {
    line.strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.strip_suffix(MARKER_SUFFIX))
        .is_some_and(|count| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
}

/// A log fence's body with repeated lines collapsed; everything else,
/// line endings included, is kept as it is.
fn collapse_log(out: &mut Output<'_>, body: Range<usize>) {
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

/// A code fence's body without its comments and blank lines, or unchanged
/// when the lexer is unsure.
fn strip_code(out: &mut Output<'_>, fence: &Fence<'_>, lang: Lang, body: Range<usize>) {
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
fn trailing_comments(code: &[u8], comments: &[Range<usize>]) -> Vec<Range<usize>> {
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
struct Strip<'a> {
    code: &'a str,
    /// Multi-line string literals: their lines are kept even when blank.
    strings: &'a [Range<usize>],
    /// The comments to remove, all trailing.
    comments: &'a [Range<usize>],
    fence: &'a Fence<'a>,
}

impl Strip<'_> {
    /// Calls `keep` with each range of the code that stays, in order.
    /// Returns `None`, possibly after some calls, when stripping is unsafe.
    fn walk(&self, mut keep: impl FnMut(Range<usize>)) -> Option<()> {
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

/// The languages whose comments [`aggressive`] strips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    C,
    CSharp,
    Css,
    Dockerfile,
    Go,
    Haskell,
    Java,
    Js,
    Kotlin,
    Lua,
    Make,
    Perl,
    Php,
    Python,
    R,
    Ruby,
    Rust,
    Scala,
    Scss,
    Shell,
    Sql,
    Swift,
    Toml,
    Yaml,
}

const LANGUAGES: &[(&str, Lang)] = &[
    ("rust", Lang::Rust),
    ("rs", Lang::Rust),
    ("c", Lang::C),
    ("h", Lang::C),
    ("cpp", Lang::C),
    ("c++", Lang::C),
    ("cc", Lang::C),
    ("hpp", Lang::C),
    ("objc", Lang::C),
    ("objective-c", Lang::C),
    ("java", Lang::Java),
    ("kotlin", Lang::Kotlin),
    ("kt", Lang::Kotlin),
    ("scala", Lang::Scala),
    ("swift", Lang::Swift),
    ("go", Lang::Go),
    ("js", Lang::Js),
    ("javascript", Lang::Js),
    ("jsx", Lang::Js),
    ("ts", Lang::Js),
    ("typescript", Lang::Js),
    ("tsx", Lang::Js),
    ("c#", Lang::CSharp),
    ("cs", Lang::CSharp),
    ("csharp", Lang::CSharp),
    ("php", Lang::Php),
    ("css", Lang::Css),
    ("scss", Lang::Scss),
    ("less", Lang::Scss),
    ("python", Lang::Python),
    ("py", Lang::Python),
    ("ruby", Lang::Ruby),
    ("rb", Lang::Ruby),
    ("sh", Lang::Shell),
    ("bash", Lang::Shell),
    ("shell", Lang::Shell),
    ("zsh", Lang::Shell),
    ("yaml", Lang::Yaml),
    ("yml", Lang::Yaml),
    ("toml", Lang::Toml),
    ("perl", Lang::Perl),
    ("pl", Lang::Perl),
    ("r", Lang::R),
    ("dockerfile", Lang::Dockerfile),
    ("makefile", Lang::Make),
    ("make", Lang::Make),
    ("sql", Lang::Sql),
    ("lua", Lang::Lua),
    ("haskell", Lang::Haskell),
    ("hs", Lang::Haskell),
];

/// Go comments that are directives, or example output checked by `go test`.
const GO_DIRECTIVES: &[&[u8]] = &[
    b"//go:",
    b"// +build",
    b"//export ",
    b"//extern ",
    b"//line ",
    b"// Output:",
    b"// Unordered output:",
];

/// JavaScript and TypeScript comments read by compilers and bundlers.
const JS_PRAGMAS: &[&[u8]] = &[b"@ts-", b"@jsx", b"@flow", b"__PURE__"];

/// Ruby magic comments.
const RUBY_MAGIC: &[&[u8]] = &[
    b"coding:",
    b"frozen_string_literal",
    b"shareable_constant_value",
    b"warn_indent",
];

impl Lang {
    fn from_tag(tag: &str) -> Option<Lang> {
        LANGUAGES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(tag))
            .map(|&(_, lang)| lang)
    }

    /// `//` starts a comment.
    fn slash_line(self) -> bool {
        matches!(
            self,
            Lang::C
                | Lang::CSharp
                | Lang::Go
                | Lang::Java
                | Lang::Js
                | Lang::Kotlin
                | Lang::Php
                | Lang::Rust
                | Lang::Scala
                | Lang::Scss
                | Lang::Swift
        )
    }

    /// `/* */` comments, and whether they nest.
    fn slash_block(self) -> Option<bool> {
        match self {
            Lang::Kotlin | Lang::Rust | Lang::Scala | Lang::Swift => Some(true),
            Lang::C
            | Lang::CSharp
            | Lang::Css
            | Lang::Go
            | Lang::Java
            | Lang::Js
            | Lang::Php
            | Lang::Scss
            | Lang::Sql => Some(false),
            _ => None,
        }
    }

    /// Plain `"…"` strings may span lines.
    fn multiline_strings(self) -> bool {
        matches!(
            self,
            Lang::Perl | Lang::Php | Lang::R | Lang::Ruby | Lang::Rust | Lang::Shell | Lang::Yaml
        )
    }

    /// Keywords after which a `/` starts a regular expression.
    fn regex_keyword(self, word: &[u8]) -> bool {
        let keywords: &[&[u8]] = match self {
            Lang::Js => &[
                b"return",
                b"typeof",
                b"case",
                b"do",
                b"else",
                b"in",
                b"of",
                b"new",
                b"delete",
                b"void",
                b"throw",
                b"instanceof",
                b"yield",
                b"await",
            ],
            Lang::Ruby => &[
                b"if", b"elsif", b"unless", b"when", b"while", b"until", b"and", b"or", b"not",
                b"return", b"then", b"do", b"else", b"case", b"in",
            ],
            Lang::Perl => &[
                b"if", b"unless", b"while", b"until", b"and", b"or", b"not", b"return", b"split",
                b"grep", b"map", b"lt", b"gt", b"le", b"ge", b"eq", b"ne", b"cmp",
            ],
            _ => return false,
        };
        keywords.contains(&word)
    }
}

/// The lexer cannot tell comments from code with confidence.
#[derive(Debug)]
struct Unsure;

type Lex<T> = Result<T, Unsure>;

/// What the lexer found in a code block.
#[derive(Debug, Default)]
struct Lexed {
    /// Comments that may be removed, in order.
    comments: Vec<Range<usize>>,
    /// String literals and other verbatim text spanning lines, in order.
    strings: Vec<Range<usize>>,
}

/// The last token, for telling a regular expression from a division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// Start of code, an operator or a keyword: a value may follow.
    Operator,
    /// An identifier.
    Word,
    /// A literal or a closing bracket: an operator follows.
    Value,
}

struct Lexer<'a> {
    lang: Lang,
    src: &'a [u8],
    pos: usize,
    line_start: usize,
    /// Only indentation precedes `pos` on its line.
    indent_only: bool,
    prev: Prev,
    /// JavaScript: the template literals whose `${` interpolation is open,
    /// with the depth of `{` inside each.
    templates: Vec<usize>,
    /// Shell: `pos` starts a word.
    word_start: bool,
    /// YAML: a scalar may start at `pos` (so a quote opens a string).
    scalar_start: bool,
    /// YAML: the line ends with a block scalar indicator (`|`, `>`).
    block_scalar: bool,
    /// Make: depth of `$(`/`${` references, where `#` is not a comment.
    make_depth: usize,
    lexed: Lexed,
}

impl<'a> Lexer<'a> {
    fn new(lang: Lang, src: &'a [u8]) -> Lexer<'a> {
        Lexer {
            lang,
            src,
            pos: 0,
            line_start: 0,
            indent_only: true,
            prev: Prev::Operator,
            templates: Vec::new(),
            word_start: true,
            scalar_start: true,
            block_scalar: false,
            make_depth: 0,
            lexed: Lexed::default(),
        }
    }

    fn run(mut self) -> Lex<Lexed> {
        self.check_body()?;
        while self.pos < self.src.len() {
            self.step()?;
        }
        if self.templates.is_empty() {
            Ok(self.lexed)
        } else {
            Err(Unsure)
        }
    }

    /// Constructs anywhere in the block that make it unsafe to strip.
    fn check_body(&self) -> Lex<()> {
        let src = self.src;
        let has = |needle: &str| memmem::find(src, needle.as_bytes()).is_some();
        let unsure = match self.lang {
            // cgo: the comment before `import "C"` is C code.
            Lang::Go => has("\"C\""),
            // Outside `<?php … ?>` is HTML, where comments mean nothing.
            Lang::Php => has("?>") || (has("<?") && !src.trim_ascii_start().starts_with(b"<?")),
            // Comments inside `define` are part of the variable.
            Lang::Make => has("define") || has(".RECIPEPREFIX"),
            // What follows `__END__` is data.
            Lang::Ruby => has("__END__"),
            Lang::Perl => has("__END__") || has("__DATA__"),
            _ => false,
        };
        if unsure { Err(Unsure) } else { Ok(()) }
    }

    fn step(&mut self) -> Lex<()> {
        let byte = self.src[self.pos];
        match byte {
            b'\n' => {
                self.newline();
                return Ok(());
            }
            // A Make recipe line is shell code, passed on as it is.
            b'\t' if self.lang == Lang::Make && self.pos == self.line_start => {
                self.pos = line_end(self.src, self.pos);
                return Ok(());
            }
            b' ' | b'\t' | b'\r' | b'\x0c' => {
                self.pos += 1;
                self.word_start = true;
                return Ok(());
            }
            _ => {}
        }
        let start = self.pos;
        if let Some(end) = self.comment()? {
            if !self.keep(start, end) {
                self.lexed.comments.push(start..end);
            }
            self.jump(end);
        } else if let Some(end) = self.literal()? {
            self.literal_span(start, end);
        } else {
            self.code(byte)?;
        }
        self.indent_only = false;
        Ok(())
    }

    fn newline(&mut self) {
        if std::mem::take(&mut self.block_scalar) && self.yaml_block_scalar() {
            return;
        }
        self.pos += 1;
        self.start_line();
    }

    fn start_line(&mut self) {
        self.line_start = self.pos;
        self.indent_only = true;
        self.word_start = true;
        self.scalar_start = true;
    }

    /// Moves to `end`, past a token that may span lines.
    fn jump(&mut self, end: usize) {
        if let Some(newline) = memrchr(b'\n', &self.src[self.pos..end]) {
            self.line_start = self.pos + newline + 1;
        }
        self.pos = end;
    }

    /// Records a string-like literal ending at `end` and moves past it.
    fn literal_span(&mut self, start: usize, end: usize) {
        if memchr(b'\n', &self.src[start..end]).is_some() {
            self.lexed.strings.push(start..end);
        }
        self.jump(end);
        self.prev = Prev::Value;
        self.word_start = false;
        self.scalar_start = false;
    }

    // Comments.

    /// The end of the comment starting at `pos`, if one does.
    fn comment(&self) -> Lex<Option<usize>> {
        let (src, pos, lang) = (self.src, self.pos, self.lang);
        let rest = &src[pos..];
        if lang.slash_line() && rest.starts_with(b"//") {
            // `http://`: a URL outside a string, JSX text, or a label. Unsure.
            if pos > 0 && src[pos - 1] == b':' {
                return Err(Unsure);
            }
            return self.line_comment().map(Some);
        }
        if rest.starts_with(b"/*") {
            if let Some(nested) = lang.slash_block() {
                return self.block_comment(b"/*", b"*/", nested).map(Some);
            }
        }
        match lang {
            Lang::Haskell if rest.starts_with(b"{-") => {
                self.block_comment(b"{-", b"-}", true).map(Some)
            }
            Lang::Haskell if self.haskell_dashes() => self.line_comment().map(Some),
            Lang::Lua if rest.starts_with(b"--") => match long_bracket(src, pos + 2) {
                Some(level) => self.long_bracket_end(pos + level + 4, level).map(Some),
                None => self.line_comment().map(Some),
            },
            Lang::Sql if rest.starts_with(b"--") => self.line_comment().map(Some),
            // MySQL's `#` comments, or PostgreSQL's `#` operators?
            Lang::Sql if rest[0] == b'#' && self.indent_only => Err(Unsure),
            Lang::Ruby if pos == self.line_start && starts_with_word(rest, b"=begin") => {
                self.ruby_doc_end().map(Some)
            }
            // Perl's POD documentation.
            Lang::Perl
                if pos == self.line_start
                    && rest[0] == b'='
                    && rest.get(1).is_some_and(u8::is_ascii_alphabetic) =>
            {
                Err(Unsure)
            }
            _ if rest[0] == b'#' && self.hash_comment() => self.line_comment().map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the `#` at `pos` starts a comment.
    fn hash_comment(&self) -> bool {
        let (src, pos) = (self.src, self.pos);
        match self.lang {
            Lang::Python | Lang::R | Lang::Ruby | Lang::Toml => true,
            // `#[...]` is an attribute.
            Lang::Php => src.get(pos + 1) != Some(&b'['),
            Lang::Shell => self.word_start,
            Lang::Yaml => pos == self.line_start || matches!(src[pos - 1], b' ' | b'\t'),
            Lang::Dockerfile | Lang::Perl => self.indent_only,
            Lang::Make => self.make_depth == 0,
            _ => false,
        }
    }

    /// Whether a `--` line comment starts at `pos` (and not an operator
    /// such as `-->`).
    fn haskell_dashes(&self) -> bool {
        let (src, pos) = (self.src, self.pos);
        if !src[pos..].starts_with(b"--") || (pos > 0 && is_haskell_symbol(src[pos - 1])) {
            return false;
        }
        let dashes = leading(&src[pos..], b'-');
        src.get(pos + dashes).is_none_or(|&b| !is_haskell_symbol(b))
    }

    fn line_comment(&self) -> Lex<usize> {
        let end = line_end(self.src, self.pos);
        // A line continuation: the comment goes on, in C and Make.
        if self.src[self.pos..end].trim_ascii_end().last() == Some(&b'\\') {
            return Err(Unsure);
        }
        Ok(end)
    }

    fn block_comment(&self, open: &[u8; 2], close: &[u8; 2], nested: bool) -> Lex<usize> {
        let src = self.src;
        let mut depth = 1usize;
        let mut i = self.pos + 2;
        loop {
            let j = i + memchr2(open[0], close[0], &src[i..]).ok_or(Unsure)?;
            if src[j..].starts_with(close) {
                depth -= 1;
                i = j + 2;
                if depth == 0 {
                    return Ok(i);
                }
            } else if src[j..].starts_with(open) && nested {
                depth += 1;
                i = j + 2;
            } else if src[j..].starts_with(open) && self.lang == Lang::Sql {
                // PostgreSQL nests block comments, other databases do not.
                return Err(Unsure);
            } else {
                i = j + 1;
            }
        }
    }

    /// The end of a Ruby `=begin` … `=end` comment.
    fn ruby_doc_end(&self) -> Lex<usize> {
        let src = self.src;
        let mut line = self.pos;
        loop {
            line += memchr(b'\n', &src[line..]).ok_or(Unsure)? + 1;
            if starts_with_word(&src[line..], b"=end") {
                return Ok(line_end(src, line));
            }
        }
    }

    /// Whether the comment `start..end` means something to a tool and must
    /// stay.
    fn keep(&self, start: usize, end: usize) -> bool {
        let text = &self.src[start..end];
        if text.starts_with(b"#!") && start == self.line_start {
            return true;
        }
        let contains = |needles: &[&[u8]]| {
            needles
                .iter()
                .any(|needle| memmem::find(text, needle).is_some())
        };
        match self.lang {
            Lang::Dockerfile => is_docker_directive(text),
            Lang::Go => GO_DIRECTIVES.iter().any(|prefix| text.starts_with(prefix)),
            Lang::Haskell => text.starts_with(b"{-#"),
            Lang::Js => text.starts_with(b"/// <") || contains(JS_PRAGMAS),
            Lang::Python => contains(&[b"coding:", b"coding="]),
            Lang::Ruby => contains(RUBY_MAGIC),
            Lang::Sql => [b"/*!", b"/*+", b"--+"]
                .iter()
                .any(|prefix| text.starts_with(*prefix)),
            Lang::Swift => text.starts_with(b"// swift-tools-version"),
            _ => false,
        }
    }

    // String literals and other verbatim text.

    /// The end of the literal starting at `pos`, if one does.
    fn literal(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        let next = src.get(pos + 1).copied();
        match (self.lang, src[pos]) {
            (_, b'"') => self.double_quoted(),
            (_, b'\'') => self.single_quoted(),
            (_, b'`') => self.backquoted(),
            (Lang::Js | Lang::Perl | Lang::Ruby, b'/') if self.regex_allowed() => {
                self.regex().map(Some)
            }
            (Lang::CSharp, b'@' | b'$') => self.verbatim(),
            (Lang::Swift, b'#') => self.swift_raw(),
            (Lang::Lua, b'[') => match long_bracket(src, pos) {
                Some(level) => self.long_bracket_end(pos + level + 2, level).map(Some),
                None => Ok(None),
            },
            (Lang::Ruby, b'%') => self.percent_literal(),
            (Lang::Ruby, b'?') => Ok(self.ruby_char()),
            (Lang::Shell, b'$') if next == Some(b'\'') => {
                self.escaped(pos + 2, b'\'', true).map(Some)
            }
            (Lang::Sql, b'$') => self.dollar_quoted(),
            _ => Ok(None),
        }
    }

    fn double_quoted(&self) -> Lex<Option<usize>> {
        let (src, pos, lang) = (self.src, self.pos, self.lang);
        // Only C# needs to know past three.
        let quotes = match lang {
            Lang::CSharp => leading(&src[pos..], b'"'),
            _ => leading_up_to(&src[pos..], b'"', 3),
        };
        let end = match lang {
            Lang::Dockerfile | Lang::Make => return Ok(None),
            Lang::Yaml if !self.scalar_start => return Ok(None),
            // A quoted identifier, `""` inside.
            Lang::Sql => self.plain(pos + 1, b'"', true, true)?,
            Lang::Java | Lang::Python | Lang::Swift if quotes >= 3 => {
                self.until(pos + 3, b"\"\"\"", true)?
            }
            Lang::Toml if quotes >= 3 => {
                extend(src, self.until(pos + 3, b"\"\"\"", true)?, b'"', 2)
            }
            Lang::Kotlin | Lang::Scala if quotes >= 3 => extend(
                src,
                self.until(pos + 3, b"\"\"\"", false)?,
                b'"',
                usize::MAX,
            ),
            Lang::CSharp if quotes >= 3 => {
                let delimiter = &src[pos..pos + quotes];
                extend(
                    src,
                    self.until(pos + quotes, delimiter, false)?,
                    b'"',
                    usize::MAX,
                )
            }
            _ if quotes >= 2 => pos + 2,
            _ => self.escaped(pos + 1, b'"', lang.multiline_strings())?,
        };
        Ok(Some(end))
    }

    fn single_quoted(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        let quotes = leading_up_to(&src[pos..], b'\'', 3);
        let end = match self.lang {
            Lang::Dockerfile | Lang::Make | Lang::Swift => return Ok(None),
            Lang::Haskell | Lang::Rust | Lang::Scala => return self.char_literal(),
            Lang::Yaml if !self.scalar_start => return Ok(None),
            Lang::Yaml => self.plain(pos + 1, b'\'', true, true)?,
            Lang::Sql => {
                let end = self.plain(pos + 1, b'\'', true, true)?;
                // `\'` escapes the quote in MySQL, not in standard SQL.
                if memchr(b'\\', &src[pos..end]).is_some() {
                    return Err(Unsure);
                }
                end
            }
            Lang::Python if quotes >= 3 => self.until(pos + 3, b"'''", true)?,
            Lang::Toml if quotes >= 3 => extend(src, self.until(pos + 3, b"'''", false)?, b'\'', 2),
            Lang::Python | Lang::Toml if quotes == 2 => pos + 2,
            Lang::Toml => self.plain(pos + 1, b'\'', false, false)?,
            Lang::Shell => self.plain(pos + 1, b'\'', true, false)?,
            Lang::Perl | Lang::Php | Lang::R | Lang::Ruby => self.escaped(pos + 1, b'\'', true)?,
            Lang::C
            | Lang::CSharp
            | Lang::Css
            | Lang::Go
            | Lang::Java
            | Lang::Js
            | Lang::Kotlin
            | Lang::Lua
            | Lang::Python
            | Lang::Scss => self.escaped(pos + 1, b'\'', false)?,
        };
        Ok(Some(end))
    }

    fn backquoted(&self) -> Lex<Option<usize>> {
        let from = self.pos + 1;
        let end = match self.lang {
            Lang::Go => self.plain(from, b'`', true, false)?,
            Lang::Perl | Lang::Php | Lang::Ruby | Lang::Shell => self.escaped(from, b'`', true)?,
            Lang::Sql => self.plain(from, b'`', true, true)?,
            Lang::R => self.escaped(from, b'`', false)?,
            Lang::Haskell | Lang::Kotlin | Lang::Scala | Lang::Swift => {
                self.plain(from, b'`', false, false)?
            }
            // JavaScript template literals are lexed as code, for `${`.
            _ => return Ok(None),
        };
        Ok(Some(end))
    }

    /// A char literal (`'a'`, `'\n'`), or `None` for a lifetime, a label, a
    /// symbol, a promoted constructor (`'a`, `'static`, `'True`).
    fn char_literal(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        match src.get(pos + 1) {
            None | Some(b'\n' | b'\r' | b'\'') => Ok(None),
            Some(b'\\') => self
                .escaped(escape_end(src, pos + 1)?, b'\'', false)
                .map(Some),
            Some(&first) => {
                let after = pos + 1 + utf8_len(first);
                Ok((src.get(after) == Some(&b'\'')).then_some(after + 1))
            }
        }
    }

    /// The end of a string from `from`, closed by `quote`, with backslash
    /// escapes.
    fn escaped(&self, from: usize, quote: u8, multiline: bool) -> Lex<usize> {
        let src = self.src;
        let mut i = from;
        loop {
            let j = i + memchr3(quote, b'\\', b'\n', &src[i..]).ok_or(Unsure)?;
            match src[j] {
                b'\\' => i = escape_end(src, j)?,
                b'\n' if multiline => i = j + 1,
                b'\n' => return Err(Unsure),
                _ => return Ok(j + 1),
            }
        }
    }

    /// The end of a string from `from`, closed by `quote`, without escapes;
    /// when `doubled`, two quotes stand for one.
    fn plain(&self, from: usize, quote: u8, multiline: bool, doubled: bool) -> Lex<usize> {
        let src = self.src;
        let mut i = from;
        loop {
            let j = i + memchr2(quote, b'\n', &src[i..]).ok_or(Unsure)?;
            if src[j] == b'\n' {
                if !multiline {
                    return Err(Unsure);
                }
                i = j + 1;
            } else if doubled && src.get(j + 1) == Some(&quote) {
                i = j + 2;
            } else {
                return Ok(j + 1);
            }
        }
    }

    /// The end of a string from `from`, closed by `delimiter`.
    fn until(&self, from: usize, delimiter: &[u8], escapes: bool) -> Lex<usize> {
        let src = self.src;
        if !escapes {
            let found = memmem::find(&src[from..], delimiter).ok_or(Unsure)?;
            return Ok(from + found + delimiter.len());
        }
        let mut i = from;
        loop {
            let j = i + memchr2(delimiter[0], b'\\', &src[i..]).ok_or(Unsure)?;
            if src[j] == b'\\' {
                i = escape_end(src, j)?;
            } else if src[j..].starts_with(delimiter) {
                return Ok(j + delimiter.len());
            } else {
                i = j + 1;
            }
        }
    }

    /// The end of text from `open_at`, delimited by the byte there: a
    /// bracket (nesting) or any punctuation (repeated), with escapes.
    fn delimited(&self, open_at: usize) -> Lex<usize> {
        let src = self.src;
        let open = src[open_at];
        let close = closing_bracket(open).unwrap_or(open);
        let mut depth = 0usize;
        let mut i = open_at + 1;
        loop {
            let j = i + memchr3(close, open, b'\\', &src[i..]).ok_or(Unsure)?;
            let byte = src[j];
            if byte == b'\\' {
                i = escape_end(src, j)?;
                continue;
            }
            i = j + 1;
            if byte != close {
                depth += 1;
            } else if depth == 0 {
                return Ok(i);
            } else {
                depth -= 1;
            }
        }
    }

    /// Whether a `/` (or Ruby `%(`) at `pos` starts a literal rather than
    /// dividing.
    fn regex_allowed(&self) -> bool {
        match self.prev {
            Prev::Operator => true,
            Prev::Value => false,
            // `split /,/` in Ruby and Perl: an argument, as the interpreters
            // read it, when a space comes before the `/` and none after.
            Prev::Word => {
                matches!(self.lang, Lang::Perl | Lang::Ruby)
                    && matches!(self.src[self.pos - 1], b' ' | b'\t')
                    && self
                        .src
                        .get(self.pos + 1)
                        .is_some_and(|&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'='))
            }
        }
    }

    fn regex(&self) -> Lex<usize> {
        let src = self.src;
        let mut i = self.pos + 1;
        let mut class = false;
        loop {
            match src.get(i) {
                None | Some(b'\n') => return Err(Unsure),
                Some(b'\\') if matches!(src.get(i + 1), None | Some(b'\n')) => return Err(Unsure),
                Some(b'\\') => i += 2,
                Some(b'[') => {
                    class = true;
                    i += 1;
                }
                Some(b']') => {
                    class = false;
                    i += 1;
                }
                Some(b'/') if !class => return Ok(i + 1),
                Some(_) => i += 1,
            }
        }
    }

    /// C# verbatim strings: `@"…"`, `$@"…"`, `@$"…"`.
    fn verbatim(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        // Within a run of `@` and `$`, its start has answered already.
        if pos > 0 && matches!(src[pos - 1], b'@' | b'$') {
            return Ok(None);
        }
        let prefix = src[pos..]
            .iter()
            .take_while(|&&b| b == b'@' || b == b'$')
            .count();
        let quote = pos + prefix;
        if src.get(quote) != Some(&b'"') || !src[pos..quote].contains(&b'@') {
            return Ok(None);
        }
        self.plain(quote + 1, b'"', true, true).map(Some)
    }

    /// Swift raw strings: `#"…"#`, `##"""…"""##`.
    fn swift_raw(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        // Within a run of `#`, its start has answered already.
        if pos > 0 && src[pos - 1] == b'#' {
            return Ok(None);
        }
        let hashes = leading(&src[pos..], b'#');
        let quote = pos + hashes;
        if src.get(quote) != Some(&b'"') {
            return Ok(None);
        }
        let quotes = if src[quote..].starts_with(b"\"\"\"") {
            3
        } else {
            1
        };
        let mut close = vec![b'"'; quotes];
        close.extend(std::iter::repeat_n(b'#', hashes));
        self.until(quote + quotes, &close, false).map(Some)
    }

    /// The end of a Lua long bracket whose content starts at `from`.
    fn long_bracket_end(&self, from: usize, level: usize) -> Lex<usize> {
        let src = self.src;
        let mut i = from;
        loop {
            let j = i + memchr(b']', &src[i..]).ok_or(Unsure)?;
            let equals = leading(&src[j + 1..], b'=');
            if equals == level && src.get(j + 1 + level) == Some(&b']') {
                return Ok(j + level + 2);
            }
            i = j + 1;
        }
    }

    /// Ruby's `%w[…]`, `%q(…)`, `%r{…}`, `%(…)`...
    fn percent_literal(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        let Some(&kind) = src.get(pos + 1) else {
            return Ok(None);
        };
        let open =
            if b"qQwWiIrsx".contains(&kind) && src.get(pos + 2).is_some_and(|&d| is_delimiter(d)) {
                pos + 2
            } else if b"({[<|!/^".contains(&kind) && self.regex_allowed() {
                pos + 1
            } else {
                return Ok(None);
            };
        self.delimited(open).map(Some)
    }

    /// Ruby character literals that would otherwise be read as a quote or a
    /// comment: `?"`, `?'`, `` ?` ``, `?#`, `?\x`.
    fn ruby_char(&self) -> Option<usize> {
        let (src, pos) = (self.src, self.pos);
        let len = match src.get(pos + 1)? {
            b'\\' => 3,
            b'\'' | b'"' | b'`' | b'#' => 2,
            _ => return None,
        };
        let end = pos + len;
        let alone = end <= src.len() && !src.get(end).is_some_and(|&b| is_ident_byte(b));
        alone.then_some(end)
    }

    /// PostgreSQL dollar quotes: `$$…$$`, `$tag$…$tag$`.
    fn dollar_quoted(&self) -> Lex<Option<usize>> {
        let (src, pos) = (self.src, self.pos);
        if pos > 0 && is_ident_byte(src[pos - 1]) {
            return Ok(None);
        }
        let tag = src[pos + 1..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_')
            .count();
        // `$1` is a parameter.
        if tag > 0 && src[pos + 1].is_ascii_digit() {
            return Ok(None);
        }
        let close = pos + 1 + tag;
        if src.get(close) != Some(&b'$') {
            return Ok(None);
        }
        self.until(close + 1, &src[pos..=close], false).map(Some)
    }

    // Literals introduced by a word.

    /// Rust raw strings: `r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#`.
    fn rust_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
        if !matches!(word, b"r" | b"br" | b"cr") {
            return Ok(None);
        }
        let src = self.src;
        let hashes = leading(&src[after..], b'#');
        let quote = after + hashes;
        if src.get(quote) != Some(&b'"') {
            return Ok(None);
        }
        let mut close = vec![b'"'];
        close.extend(std::iter::repeat_n(b'#', hashes));
        self.until(quote + 1, &close, false).map(Some)
    }

    /// C++ raw strings: `R"delim(…)delim"`, with an encoding prefix or not.
    fn cpp_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
        let src = self.src;
        if !matches!(word, b"R" | b"LR" | b"uR" | b"UR" | b"u8R") || src.get(after) != Some(&b'"') {
            return Ok(None);
        }
        let from = after + 1;
        let paren = src[from..]
            .iter()
            .take(17)
            .position(|&b| b == b'(')
            .ok_or(Unsure)?;
        let delimiter = &src[from..from + paren];
        if delimiter
            .iter()
            .any(|&b| b.is_ascii_whitespace() || matches!(b, b'\\' | b')' | b'"'))
        {
            return Err(Unsure);
        }
        let mut close = vec![b')'];
        close.extend_from_slice(delimiter);
        close.push(b'"');
        self.until(from + paren + 1, &close, false).map(Some)
    }

    /// R raw strings: `r"(…)"`, `R'[…]'`, `r"--{…}--"`.
    fn r_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
        let src = self.src;
        let Some(&quote) = src.get(after) else {
            return Ok(None);
        };
        if !matches!(word, b"r" | b"R") || !matches!(quote, b'"' | b'\'') {
            return Ok(None);
        }
        let dashes = leading(&src[after + 1..], b'-');
        let Some(bracket) = src
            .get(after + 1 + dashes)
            .copied()
            .and_then(closing_bracket)
        else {
            return Ok(None);
        };
        let mut close = vec![bracket];
        close.extend(std::iter::repeat_n(b'-', dashes));
        close.push(quote);
        self.until(after + dashes + 2, &close, false).map(Some)
    }

    /// Perl quote-like operators: `q(…)`, `qw{…}`, `m/…/`, `s/…/…/`,
    /// `tr{…}{…}`...
    fn perl_quote(&self, word: &[u8], start: usize, after: usize) -> Lex<Option<usize>> {
        let parts = match word {
            b"q" | b"qq" | b"qw" | b"qr" | b"m" => 1,
            b"s" | b"tr" | b"y" => 2,
            _ => return Ok(None),
        };
        let src = self.src;
        // `$s`, `@m`, `%y`, `->s`, `-s` (a file test) are not operators.
        if start > 0
            && matches!(
                src[start - 1],
                b'$' | b'@' | b'%' | b'&' | b'*' | b'>' | b'-'
            )
        {
            return Ok(None);
        }
        let Some(&delimiter) = src.get(after) else {
            return Ok(None);
        };
        // `s => 1`, `{y}`, `(q, m)` are not operators either.
        if !is_delimiter(delimiter) || b",;)]}>=".contains(&delimiter) {
            return Ok(None);
        }
        let end = self.delimited(after)?;
        if parts == 1 {
            return Ok(Some(end));
        }
        if closing_bracket(delimiter).is_none() {
            // `s/a/b/`: the middle delimiter opens the replacement.
            return self.delimited(end - 1).map(Some);
        }
        // `s{a} {b}`: the replacement has its own delimiters.
        let next = end
            + src[end..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        match src.get(next) {
            Some(&d) if is_delimiter(d) => self.delimited(next).map(Some),
            _ => Err(Unsure),
        }
    }

    // Code.

    fn code(&mut self, byte: u8) -> Lex<()> {
        let lang = self.lang;
        if self.is_word_start(byte) {
            return self.word();
        }
        if byte.is_ascii_digit() {
            self.number();
            return Ok(());
        }
        let pos = self.pos;
        match byte {
            b'`' if lang == Lang::Js => return self.template(pos, pos + 1),
            b'{' => self.open_brace(),
            b'}' if self.close_brace() => return self.template(pos, pos + 1),
            b'(' if self.make_depth > 0 => self.make_depth += 1,
            b')' => self.make_depth = self.make_depth.saturating_sub(1),
            b'<' => self.angle()?,
            b'$' => {
                if let Some(len) = self.dollar() {
                    self.pos += len;
                    self.prev = Prev::Value;
                    self.word_start = false;
                    return Ok(());
                }
            }
            b'\\' if matches!(lang, Lang::Make | Lang::Shell) => {
                let end = escape_end(self.src, pos).unwrap_or(self.src.len());
                self.jump(end);
                self.prev = Prev::Operator;
                self.word_start = false;
                return Ok(());
            }
            // Quasi-quotes hold text in any language.
            b'[' if lang == Lang::Haskell && self.quasiquote() => return Err(Unsure),
            b'!' | b'&' if lang == Lang::Yaml && self.scalar_start => {
                // A tag or an anchor: a quoted scalar may still follow.
                self.pos += self.src[pos..]
                    .iter()
                    .take_while(|b| !b.is_ascii_whitespace())
                    .count();
                return Ok(());
            }
            b'|' | b'>' if lang == Lang::Yaml && self.scalar_start => {
                self.block_scalar = self.block_indicator();
            }
            _ => {}
        }
        self.pos += 1;
        self.prev = if matches!(byte, b')' | b']') {
            Prev::Value
        } else {
            Prev::Operator
        };
        self.word_start = matches!(byte, b';' | b'&' | b'|');
        self.scalar_start = matches!(byte, b':' | b'-' | b'?' | b',' | b'[' | b'{');
        Ok(())
    }

    fn is_word_start(&self, byte: u8) -> bool {
        byte.is_ascii_alphabetic()
            || byte == b'_'
            || byte >= 0x80
            || (byte == b'$' && matches!(self.lang, Lang::Js | Lang::Php))
    }

    fn is_word_byte(&self, byte: u8) -> bool {
        self.is_word_start(byte)
            || byte.is_ascii_digit()
            || (byte == b'\'' && self.lang == Lang::Haskell)
    }

    fn word(&mut self) -> Lex<()> {
        let (src, start) = (self.src, self.pos);
        let end = start
            + src[start..]
                .iter()
                .take_while(|&&b| self.is_word_byte(b))
                .count();
        let word = &src[start..end];
        let literal = match self.lang {
            Lang::C => self.cpp_raw(word, end)?,
            Lang::Perl => self.perl_quote(word, start, end)?,
            Lang::R => self.r_raw(word, end)?,
            Lang::Rust => self.rust_raw(word, end)?,
            _ => None,
        };
        if let Some(literal_end) = literal {
            self.literal_span(start, literal_end);
            return Ok(());
        }
        self.pos = end;
        self.prev = if self.lang.regex_keyword(word) {
            Prev::Operator
        } else {
            Prev::Word
        };
        self.word_start = false;
        self.scalar_start = false;
        Ok(())
    }

    fn number(&mut self) {
        let src = self.src;
        let mut end = self.pos + 1;
        while let Some(&b) = src.get(end) {
            // C++14 and C23 digit separators: `1'000'000`.
            let separator = b == b'\''
                && self.lang == Lang::C
                && src.get(end + 1).is_some_and(u8::is_ascii_hexdigit);
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || separator) {
                break;
            }
            end += 1;
        }
        self.pos = end;
        self.prev = Prev::Value;
        self.word_start = false;
        self.scalar_start = false;
    }

    /// Lexes a JavaScript template literal from `from` (past its opening
    /// `` ` `` or an interpolation's closing `}` at `start`) to its end or
    /// to the next `${`.
    fn template(&mut self, start: usize, from: usize) -> Lex<()> {
        let src = self.src;
        let mut i = from;
        loop {
            let j = i + memchr3(b'`', b'\\', b'$', &src[i..]).ok_or(Unsure)?;
            match src[j] {
                b'\\' => i = escape_end(src, j)?,
                b'$' if src.get(j + 1) == Some(&b'{') => {
                    self.literal_span(start, j + 2);
                    self.templates.push(0);
                    self.prev = Prev::Operator;
                    return Ok(());
                }
                b'$' => i = j + 1,
                _ => {
                    self.literal_span(start, j + 1);
                    return Ok(());
                }
            }
        }
    }

    fn open_brace(&mut self) {
        if let Some(depth) = self.templates.last_mut() {
            *depth += 1;
        }
        if self.make_depth > 0 {
            self.make_depth += 1;
        }
    }

    /// Whether the `}` at `pos` closes a template literal's interpolation.
    fn close_brace(&mut self) -> bool {
        if let Some(depth) = self.templates.last_mut() {
            if *depth == 0 {
                self.templates.pop();
                return true;
            }
            *depth -= 1;
        }
        self.make_depth = self.make_depth.saturating_sub(1);
        false
    }

    /// Here-documents and JSX, which the lexers do not follow.
    fn angle(&self) -> Lex<()> {
        let (src, pos, lang) = (self.src, self.pos, self.lang);
        let rest = &src[pos..];
        let unsure = match lang {
            Lang::Dockerfile | Lang::Shell => rest.starts_with(b"<<"),
            Lang::Php => rest.starts_with(b"<<<"),
            Lang::Perl | Lang::Ruby => rest.starts_with(b"<<") && heredoc_follows(lang, &rest[2..]),
            Lang::Js => {
                self.prev == Prev::Operator
                    && rest
                        .get(1)
                        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'>')
            }
            _ => false,
        };
        if unsure { Err(Unsure) } else { Ok(()) }
    }

    /// Perl and Ruby special variables (`$'`, `$"`, `$#`, `$/`...); Make
    /// references (`$(`, `${`) and `$$`. The length to skip.
    fn dollar(&mut self) -> Option<usize> {
        let next = *self.src.get(self.pos + 1)?;
        match self.lang {
            Lang::Perl | Lang::Ruby if next.is_ascii_punctuation() && !b"{([".contains(&next) => {
                Some(2)
            }
            Lang::Make if next == b'(' || next == b'{' => {
                self.make_depth += 1;
                Some(2)
            }
            Lang::Make if next == b'$' => Some(2),
            _ => None,
        }
    }

    /// Whether a Haskell quasi-quote (`[name|`) starts at `pos`.
    fn quasiquote(&self) -> bool {
        let rest = &self.src[self.pos + 1..];
        let name = rest
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'\''))
            .count();
        name > 0 && rest.get(name) == Some(&b'|')
    }

    /// Whether the `|` or `>` at `pos` ends its line as a YAML block scalar
    /// indicator (chomping and indentation indicators, a comment allowed).
    fn block_indicator(&self) -> bool {
        let src = self.src;
        let mut i = self.pos + 1;
        while src
            .get(i)
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'0'..=b'9'))
        {
            i += 1;
        }
        let j = i + leading_blanks(&src[i..]);
        match src.get(j) {
            None | Some(b'\n' | b'\r') => true,
            Some(b'#') => j > i,
            Some(_) => false,
        }
    }

    /// At the `\n` ending a block scalar's indicator line: records the
    /// scalar's content lines (blank, or indented deeper than the indicator
    /// line) as a string, and moves past them. `false` if there are none.
    fn yaml_block_scalar(&mut self) -> bool {
        let src = self.src;
        let parent = leading(&src[self.line_start..], b' ');
        let mut next = self.pos + 1;
        while next < src.len() {
            let end = memchr(b'\n', &src[next..]).map_or(src.len(), |i| next + i);
            let line = &src[next..end];
            if !is_blank(line) && leading(line, b' ') <= parent {
                break;
            }
            next = (end + 1).min(src.len());
        }
        if next == self.pos + 1 {
            return false;
        }
        self.lexed.strings.push(self.pos..next);
        self.pos = next;
        self.start_line();
        true
    }
}

/// Whether a Perl or Ruby `<<` is followed by a here-document's terminator.
fn heredoc_follows(lang: Lang, rest: &[u8]) -> bool {
    let rest = rest
        .strip_prefix(b"~")
        .or_else(|| rest.strip_prefix(b"-"))
        .unwrap_or(rest);
    // Perl allows a space before a quoted terminator.
    let rest = if lang == Lang::Perl {
        &rest[leading_blanks(rest)..]
    } else {
        rest
    };
    rest.first()
        .is_some_and(|&b| b.is_ascii_alphabetic() || b"_\"'`".contains(&b))
}

fn is_docker_directive(comment: &[u8]) -> bool {
    let text = comment[1..].trim_ascii_start();
    let name = text.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let key = &text[..name];
    text[name..].trim_ascii_start().starts_with(b"=")
        && ["syntax", "escape", "check"]
            .iter()
            .any(|directive| key.eq_ignore_ascii_case(directive.as_bytes()))
}

fn is_haskell_symbol(byte: u8) -> bool {
    b"!#$%&*+./<=>?@\\^|-~:".contains(&byte)
}

/// The level of the Lua long bracket (`[[`, `[==[`) opening at `at`.
fn long_bracket(src: &[u8], at: usize) -> Option<usize> {
    if src.get(at) != Some(&b'[') {
        return None;
    }
    let level = leading(src.get(at + 1..)?, b'=');
    (src.get(at + 1 + level) == Some(&b'[')).then_some(level)
}

fn closing_bracket(open: u8) -> Option<u8> {
    match open {
        b'(' => Some(b')'),
        b'[' => Some(b']'),
        b'{' => Some(b'}'),
        b'<' => Some(b'>'),
        _ => None,
    }
}

/// Whether `byte` can delimit a Ruby percent literal or a Perl quote.
fn is_delimiter(byte: u8) -> bool {
    byte.is_ascii_punctuation() && byte != b'\\' && byte != b'_'
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

/// Past the escape sequence whose backslash is at `at` (a `\r\n` after it
/// counts as one character).
fn escape_end(src: &[u8], at: usize) -> Lex<usize> {
    let end = if src[at + 1..].starts_with(b"\r\n") {
        at + 3
    } else {
        at + 2
    };
    if end > src.len() {
        Err(Unsure)
    } else {
        Ok(end)
    }
}

/// `end` moved past up to `max` more `quote`s, which close strings such as
/// TOML's `"""a""""` (content `a"`).
fn extend(src: &[u8], end: usize, quote: u8, max: usize) -> usize {
    end + leading_up_to(&src[end..], quote, max)
}

/// The end of the content of the line containing `from` (before its `\n`
/// or `\r\n`).
fn line_end(src: &[u8], from: usize) -> usize {
    match memchr(b'\n', &src[from..]) {
        Some(offset) if offset > 0 && src[from + offset - 1] == b'\r' => from + offset - 1,
        Some(offset) => from + offset,
        None => src.len(),
    }
}

fn starts_with_word(text: &[u8], word: &[u8]) -> bool {
    text.starts_with(word) && text.get(word.len()).is_none_or(u8::is_ascii_whitespace)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// How many times `byte` starts `bytes`.
fn leading(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().take_while(|&&b| b == byte).count()
}

/// How many times, up to `max`, `byte` starts `bytes`.
fn leading_up_to(bytes: &[u8], byte: u8, max: usize) -> usize {
    bytes.iter().take(max).take_while(|&&b| b == byte).count()
}

/// How many spaces and tabs start `bytes`.
fn leading_blanks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// Whether `bytes` is nothing but spaces, tabs and carriage returns.
fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// `end` moved back over the spaces, tabs and carriage returns before it,
/// down to `start`.
fn trim_blank_end(bytes: &[u8], start: usize, end: usize) -> usize {
    start
        + bytes[start..end]
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .map_or(0, |last| last + 1)
}

#[cfg(test)]
mod tests {

    #[test]
    fn unfenced_code_of_a_known_language() {
        let source = "//! The module.\n\nuse std::io; // io\n\n/// Adds.\nfn add(a: u32) -> u32 {\n    a + 1 // one\n}\n";
        assert_eq!(
            code("rs", source),
            "use std::io;\nfn add(a: u32) -> u32 {\n    a + 1\n}\n"
        );
        // No final newline: none added.
        assert_eq!(code("python", "x = 1  # one\n\ny = 2"), "x = 1\ny = 2");
        // Backtick runs in the code cannot close the wrapping fence.
        let ticks = "let s = \"```\"; // fence\n```\n// gone\n";
        assert_eq!(code("rust", ticks), "let s = \"```\";\n```\n");
        assert!(matches!(code("brainfuck", source), Cow::Borrowed(_)));
        assert!(matches!(code("rust", "fn f() {}\n"), Cow::Borrowed(_)));
    }

    use super::*;

    type Transform = for<'a> fn(&'a str) -> Cow<'a, str>;

    const MARKER_2: &str = "[… previous line repeated 2 more times]";

    /// `f(input) == expected`, an unchanged input comes back borrowed, and
    /// the invariants hold on both.
    #[track_caller]
    fn check(f: Transform, input: &str, expected: &str) {
        let output = f(input);
        assert_eq!(output, expected, "input: {:?}", short(input));
        if input == expected {
            assert!(
                matches!(output, Cow::Borrowed(_)),
                "allocated for {:?}",
                short(input)
            );
        }
        invariants(input);
        if expected != input {
            invariants(expected);
        }
    }

    /// The start of `text`, for messages.
    fn short(text: &str) -> String {
        text.chars().take(300).collect()
    }

    /// Both functions are idempotent, `aggressive` does at least what `safe`
    /// does, and whatever comes back unchanged comes back borrowed.
    #[track_caller]
    fn invariants(input: &str) {
        let safe_once = safe(input);
        let aggressive_once = aggressive(input);
        assert_eq!(
            safe(&safe_once),
            safe_once,
            "safe twice on {:?}",
            short(input)
        );
        assert_eq!(
            aggressive(&aggressive_once),
            aggressive_once,
            "aggressive twice on {:?}",
            short(input)
        );
        assert_eq!(
            safe(&aggressive_once),
            aggressive_once,
            "safe after aggressive on {:?}",
            short(input)
        );
        assert_eq!(
            aggressive(&safe_once),
            aggressive_once,
            "aggressive after safe on {:?}",
            short(input)
        );
        for output in [&safe_once, &aggressive_once] {
            if output == input {
                assert!(
                    matches!(output, Cow::Borrowed(_)),
                    "allocated for {:?}",
                    short(input)
                );
            }
        }
    }

    fn fenced(tag: &str, body: &str) -> String {
        format!("```{tag}\n{body}```\n")
    }

    /// `aggressive` turns `body`, fenced with `tag`, into `expected`; `safe`
    /// leaves it alone.
    #[track_caller]
    fn strips(tag: &str, body: &str, expected: &str) {
        check(aggressive, &fenced(tag, body), &fenced(tag, expected));
        check(safe, &fenced(tag, body), &fenced(tag, body));
    }

    /// Neither function changes `body`, fenced with `tag`.
    #[track_caller]
    fn keeps(tag: &str, body: &str) {
        strips(tag, body, body);
    }

    // `safe`.

    #[test]
    fn unchanged_text_is_borrowed() {
        for text in [
            "",
            "a",
            "a\n",
            "a\n\nb\n",
            "\n",
            "  indented\n\ttab\n",
            "```\ncode  \r\n\n\n\n```\n",
            "no newline at the end",
        ] {
            check(safe, text, text);
            check(aggressive, text, text);
        }
    }

    #[test]
    fn crlf_becomes_lf() {
        check(safe, "a\r\nb\r\n", "a\nb\n");
        check(safe, "a\r\nb", "a\nb");
        check(safe, "\r\n", "\n");
    }

    #[test]
    fn carriage_return_at_line_end_is_dropped() {
        check(safe, "a\r\r\nb\r", "a\nb");
        check(safe, "a\rb\n", "a\rb\n");
    }

    #[test]
    fn trailing_whitespace_is_removed() {
        check(safe, "a  \nb\t\n c \t \n", "a\nb\n c\n");
        check(safe, "end  ", "end");
    }

    #[test]
    fn indentation_and_inner_spaces_are_kept() {
        let text = "    four  spaces   inside\n\tTab\t and\n";
        check(safe, text, text);
    }

    #[test]
    fn blank_runs_collapse_to_one() {
        check(safe, "a\n\n\nb\n", "a\n\nb\n");
        check(safe, "a\n \n\t\n  \r\nb\n", "a\n\nb\n");
        check(safe, "a\n\n\n\n\n\n\n\n\nb", "a\n\nb");
    }

    #[test]
    fn leading_and_trailing_blank_runs_collapse() {
        check(safe, "\n\n\na\n\n\n", "\na\n\n");
        check(safe, "  \n\t\n", "\n");
        check(safe, "a\n\n  ", "a\n\n");
        check(safe, "a\n   ", "a\n");
        check(safe, "   ", "");
    }

    #[test]
    fn hard_line_break_is_lost() {
        check(safe, "line one  \nline two\n", "line one\nline two\n");
    }

    #[test]
    fn fenced_code_is_untouched() {
        let text =
            "Intro  \r\n```python  \r\n  x = 1  \r\n\r\n\r\n\r\n  y = 2\t\r\n```  \r\nOutro  \r\n";
        let expected =
            "Intro\n```python  \r\n  x = 1  \r\n\r\n\r\n\r\n  y = 2\t\r\n```  \r\nOutro\n";
        check(safe, text, expected);
    }

    #[test]
    fn tilde_fences_and_longer_closers() {
        check(safe, "~~~\na  \n~~~~\nb  \n", "~~~\na  \n~~~~\nb\n");
        check(
            safe,
            "````\na  \n```\nb  \n````\nc  \n",
            "````\na  \n```\nb  \n````\nc\n",
        );
        check(
            safe,
            "~~~\na  \n```\nb  \n~~~\nc  \n",
            "~~~\na  \n```\nb  \n~~~\nc\n",
        );
    }

    #[test]
    fn closing_fence_holds_nothing_but_whitespace() {
        check(
            safe,
            "```\na  \n``` x\nb  \n```  \nc  \n",
            "```\na  \n``` x\nb  \n```  \nc\n",
        );
    }

    #[test]
    fn fences_are_indented_three_spaces_at_most() {
        check(
            safe,
            "   ```\na  \n   ```\nb  \n",
            "   ```\na  \n   ```\nb\n",
        );
        check(safe, "    ```\na  \n", "    ```\na\n");
        check(
            safe,
            "```\na  \n    ```\nb  \n```\n",
            "```\na  \n    ```\nb  \n```\n",
        );
        check(safe, "\t```\na  \n", "\t```\na\n");
    }

    #[test]
    fn backtick_info_string_holds_no_backtick() {
        check(safe, "``` a`b\nc  \n", "``` a`b\nc\n");
        check(safe, "~~~ a`b\nc  \n", "~~~ a`b\nc  \n");
        check(safe, "``inline``  \n", "``inline``\n");
    }

    #[test]
    fn unclosed_fence_runs_to_the_end() {
        check(safe, "a  \n```\nb  \n\n\n\nc  ", "a\n```\nb  \n\n\n\nc  ");
        check(safe, "```", "```");
        check(safe, "```\n", "```\n");
    }

    #[test]
    fn fence_lines_are_kept_as_they_are() {
        let text = "```rust  \r\nx\r\n```\t\r\n";
        check(safe, text, text);
        check(aggressive, text, text);
    }

    #[test]
    fn blank_runs_do_not_cross_fences() {
        check(safe, "a\n\n\n```\n```\n\n\nb\n", "a\n\n```\n```\n\nb\n");
    }

    // `aggressive` outside code.

    #[test]
    fn aggressive_does_what_safe_does() {
        check(aggressive, "a  \r\n\n\n\nb\r\n", "a\n\nb\n");
    }

    #[test]
    fn repeated_lines_collapse() {
        check(aggressive, "x\nx\nx\ny\n", &format!("x\n{MARKER_2}\ny\n"));
        check(
            aggressive,
            "x\nx  \nx\t\r\nx",
            "x\n[… previous line repeated 3 more times]",
        );
        check(aggressive, "  x\n  x\n  x\n", &format!("  x\n{MARKER_2}\n"));
    }

    #[test]
    fn runs_of_two_stay() {
        check(aggressive, "x\nx\ny\ny\n", "x\nx\ny\ny\n");
        check(aggressive, "x\nx  \n", "x\nx\n");
    }

    #[test]
    fn different_indentation_is_a_different_line() {
        check(aggressive, "x\n x\nx\n", "x\n x\nx\n");
    }

    #[test]
    fn blank_lines_break_runs() {
        check(aggressive, "x\nx\n\nx\n", "x\nx\n\nx\n");
        check(aggressive, "x\n\n\nx\nx\n", "x\n\nx\nx\n");
    }

    #[test]
    fn markers_are_never_collapsed() {
        let text = format!("{MARKER_2}\n{MARKER_2}\n{MARKER_2}\n");
        check(aggressive, &text, &text);
        check(
            aggressive,
            &format!("x\nx\nx\n{MARKER_2}\n"),
            &format!("x\n{MARKER_2}\n{MARKER_2}\n"),
        );
        check(
            aggressive,
            "y\ny\ny\ny\ny\ny\ny\ny\ny\ny\ny\ny\n",
            "y\n[… previous line repeated 11 more times]\n",
        );
    }

    #[test]
    fn marker_must_match_exactly() {
        assert!(is_marker(MARKER_2));
        assert!(is_marker("[… previous line repeated 123 more times]"));
        assert!(!is_marker("[… previous line repeated  more times]"));
        assert!(!is_marker("[… previous line repeated x more times]"));
        assert!(!is_marker("[... previous line repeated 2 more times]"));
        let text = "[… previous line repeated x more times]\n".repeat(3);
        check(
            aggressive,
            &text,
            "[… previous line repeated x more times]\n[… previous line repeated 2 more times]\n",
        );
    }

    #[test]
    fn safe_does_not_collapse_repeats() {
        check(safe, "x\nx\nx\n", "x\nx\nx\n");
    }

    #[test]
    fn log_fences_collapse_repeats_and_keep_the_rest() {
        for tag in ["", "text", "TXT", "log", "console", "output", "plaintext"] {
            let input = format!("```{tag}\nstart\nping  \r\nping\r\nping\r\n\n\n\n\nend\n```\n");
            let expected = format!("```{tag}\nstart\nping  \r\n{MARKER_2}\r\n\n\n\n\nend\n```\n");
            check(aggressive, &input, &expected);
        }
    }

    #[test]
    fn unclosed_log_fence() {
        check(aggressive, "```\na\na\na", &format!("```\na\n{MARKER_2}"));
    }

    #[test]
    fn other_fences_are_untouched() {
        for tag in ["diff", "json", "unknown", "markdown", "rusty"] {
            let text = format!("```{tag}\n// c\nx\nx\nx\n\n\n```\n");
            check(aggressive, &text, &text);
        }
    }

    #[test]
    fn language_tags() {
        assert_eq!(language_tag(" rust,ignore extra"), "rust");
        assert_eq!(language_tag("{.python .numberLines}"), "python");
        assert_eq!(language_tag("{r setup}"), "r");
        assert_eq!(language_tag("  "), "");
        assert_eq!(Lang::from_tag("RUST"), Some(Lang::Rust));
        assert_eq!(Lang::from_tag("C#"), Some(Lang::CSharp));
        assert_eq!(Lang::from_tag("text"), None);
        for tag in ["Rust", "rust,ignore", "{.rust}", "rs"] {
            strips(tag, "x(); // c\n", "x();\n");
        }
    }

    // `aggressive` inside code.

    #[test]
    fn rust() {
        strips(
            "rust",
            r##"//! Crate docs.
use std::fmt; // trailing

/// Doc comment.
#[derive(Debug)]
struct S<'a> {
    /* block */
    name: &'a str, /* trailing block */
    url: &'static str,
}

fn main() {
    let s = "// not a comment";
    let r = r#"/* raw "quoted" */"#;
    let c = '"'; // a quote char
    let d = '\''; /* escaped */
    let b = b'/';
    let x = 1 /* inline */ + 2;
    /* multi
       line */
    'outer: loop { break 'outer; } // label
    println!("{s}{r}{c}{d}{x}{b}");
}
"##,
            r##"use std::fmt;
#[derive(Debug)]
struct S<'a> {
    name: &'a str,
    url: &'static str,
}
fn main() {
    let s = "// not a comment";
    let r = r#"/* raw "quoted" */"#;
    let c = '"';
    let d = '\'';
    let b = b'/';
    let x = 1 /* inline */ + 2;
    'outer: loop { break 'outer; }
    println!("{s}{r}{c}{d}{x}{b}");
}
"##,
        );
    }

    #[test]
    fn rust_nested_comments_and_multiline_strings() {
        strips(
            "rust",
            "/* a /* b */ still comment */\nlet s = \"line one\n\n// line three\";\n#![allow(dead_code)]\n",
            "let s = \"line one\n\n// line three\";\n#![allow(dead_code)]\n",
        );
    }

    #[test]
    fn comment_followed_by_code_is_kept() {
        strips(
            "rust",
            "f(/* a */ 1, /* b */ 2); /* c */ // d\n/* e\n*/ g();\n",
            "f(/* a */ 1, /* b */ 2);\n/* e\n*/ g();\n",
        );
    }

    #[test]
    fn indentation_and_crlf_of_code_are_kept() {
        strips(
            "rust",
            "fn f() {\r\n    // c\r\n\r\n    x(); // d\r\n\tg();\r\n}\r\n",
            "fn f() {\r\n    x();\r\n\tg();\r\n}\r\n",
        );
    }

    #[test]
    fn code_without_trailing_newline() {
        check(aggressive, "```rust\nx(); // c", "```rust\nx();");
        check(aggressive, "```rust\n// c", "```rust\n");
        check(aggressive, "```rust\nx();\n\n\n// c\n", "```rust\nx();\n");
    }

    #[test]
    fn c_and_cpp() {
        strips(
            "cpp",
            r#"#include <stdio.h> // io
#define ANSWER 42 /* answer */
#define LONG(x) \
    ((x) + 1)

/* Block
 * comment */
int main(void) {
    const char *s = "/* not */ // not";
    char q = '"'; // quote
    int n = 1'000'000; // separators
    const char *raw = R"x(// )" not )x"; // raw
    const wchar_t w = L'"';
    return 0;
}
"#,
            r#"#include <stdio.h>
#define ANSWER 42
#define LONG(x) \
    ((x) + 1)
int main(void) {
    const char *s = "/* not */ // not";
    char q = '"';
    int n = 1'000'000;
    const char *raw = R"x(// )" not )x";
    const wchar_t w = L'"';
    return 0;
}
"#,
        );
    }

    #[test]
    fn line_continuations_are_respected() {
        keeps("c", "int x; // comment \\\ncontinued\n");
        strips(
            "c",
            "#define X 1 \\\n\n#define Y 2 \\\n    + 3\n\n",
            "#define X 1 \\\n\n#define Y 2 \\\n    + 3\n",
        );
        keeps("c", "#define X 1 \\\n// c\n");
        keeps("sh", "echo a \\ # c\nb\n");
    }

    #[test]
    fn python() {
        strips(
            "python",
            r##"#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Module docstring.

# not a comment
"""
import os  # trailing


def f(x):
    # full line
    s = '#' + "#" + r'\#' + f"{x}#" + b'''#'''
    t = '''
# inside triple

'''
    return s  # type: ignore
"##,
            r##"#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Module docstring.

# not a comment
"""
import os
def f(x):
    s = '#' + "#" + r'\#' + f"{x}#" + b'''#'''
    t = '''
# inside triple

'''
    return s
"##,
        );
    }

    #[test]
    fn javascript() {
        strips(
            "js",
            r#"// header
const url = "http://example.com"; // trailing
const re = /\/\/ not a comment/g;
const t = `line ${a + "// x"} // still template
${`nested // ${b}`} end`;
/* block */
const div = a / b; // division
const q = '"'; // quote
"#,
            r#"const url = "http://example.com";
const re = /\/\/ not a comment/g;
const t = `line ${a + "// x"} // still template
${`nested // ${b}`} end`;
const div = a / b;
const q = '"';
"#,
        );
    }

    #[test]
    fn typescript_directives_are_kept() {
        strips(
            "ts",
            "/// <reference path=\"a.d.ts\" />\n// @ts-ignore\nlet x: number = y; // c\n",
            "/// <reference path=\"a.d.ts\" />\n// @ts-ignore\nlet x: number = y;\n",
        );
    }

    #[test]
    fn go() {
        strips(
            "go",
            "//go:build linux\n\npackage main\n\nimport \"fmt\" // fmt\n\n// Doc.\nfunc main() {\n\ts := `raw // not comment\n/* nor this */`\n\tr := '\"' // rune\n\tfmt.Println(s, r) /* done */\n\t// Output: x\n}\n",
            "//go:build linux\npackage main\nimport \"fmt\"\nfunc main() {\n\ts := `raw // not comment\n/* nor this */`\n\tr := '\"'\n\tfmt.Println(s, r)\n\t// Output: x\n}\n",
        );
    }

    #[test]
    fn java_kotlin_scala_swift_csharp() {
        strips(
            "java",
            "String s = \"\"\"\n    // not a comment\n\n    \"\"\"; // trailing\nchar c = '\"'; // c\n",
            "String s = \"\"\"\n    // not a comment\n\n    \"\"\";\nchar c = '\"';\n",
        );
        strips(
            "kotlin",
            "/* /* nested */ */\nval s = \"\"\"# // not\"\"\"\" // trailing\nval c = '\"'\n",
            "val s = \"\"\"# // not\"\"\"\"\nval c = '\"'\n",
        );
        strips(
            "scala",
            "val c = 'x' // char\nval s = 'sym // symbol\n",
            "val c = 'x'\nval s = 'sym\n",
        );
        strips(
            "swift",
            "// swift-tools-version:5.9\nlet s = #\"raw \"// not\" \"#  // trailing\n/* a /* b */ c */\n",
            "// swift-tools-version:5.9\nlet s = #\"raw \"// not\" \"#\n",
        );
        strips(
            "cs",
            "var path = @\"C:\\dir\\\"; // trailing\nvar q = \"\"\" // not \"\"\";\n#region R\n// c\n#endregion\n",
            "var path = @\"C:\\dir\\\";\nvar q = \"\"\" // not \"\"\";\n#region R\n#endregion\n",
        );
    }

    #[test]
    fn php() {
        strips(
            "php",
            "<?php\n# hash comment\n// slash comment\n#[Attribute]\nfunction f() { return \"# not // not\"; } /* done */\n",
            "<?php\n#[Attribute]\nfunction f() { return \"# not // not\"; }\n",
        );
        keeps("php", "<?php echo 1; ?>\n<p>// text</p>\n");
        keeps("php", "<p>It's</p>\n<?php // c\n");
        keeps("php", "<?php\n$s = <<<EOT\n# text\nEOT;\n");
    }

    #[test]
    fn css() {
        strips(
            "css",
            "/* header */\na { background: url(http://x/y.png); } /* trailing */\nb { content: \"/*\"; }\n",
            "a { background: url(http://x/y.png); }\nb { content: \"/*\"; }\n",
        );
        strips(
            "scss",
            "// line\n$x: 1px; // trailing\na { b: \"//\" } /* c */\n",
            "$x: 1px;\na { b: \"//\" }\n",
        );
        keeps("less", "a { background: url(http://x/y.png); } // c\n");
    }

    #[test]
    fn ruby() {
        strips(
            "ruby",
            "# frozen_string_literal: true\n# comment\n=begin\nblock\n=end\ns = \"#{x} # not\" # trailing\nr = /#not/ if s =~ %r{#not}\nw = %w[# not]\nc = ?#\nt = x.nil? ? 'a' : 'b' # t\n",
            "# frozen_string_literal: true\ns = \"#{x} # not\"\nr = /#not/ if s =~ %r{#not}\nw = %w[# not]\nc = ?#\nt = x.nil? ? 'a' : 'b'\n",
        );
        keeps("ruby", "s = <<~EOS\n  # text\nEOS\n");
        keeps("ruby", "x = 1 # c\n__END__\n# data\n");
    }

    #[test]
    fn shell() {
        strips(
            "sh",
            "#!/bin/bash\n# comment\necho \"# not\" '# not' a#b ${#arr[@]} $'it\\'s # not' # trailing\nx=1;# set\n",
            "#!/bin/bash\necho \"# not\" '# not' a#b ${#arr[@]} $'it\\'s # not'\nx=1;\n",
        );
        keeps("bash", "cat <<EOF\n# text\nEOF\n");
    }

    #[test]
    fn yaml() {
        strips(
            "yaml",
            "# top\nkey: value # trailing\nurl: http://x#frag\nquoted: 'it''s # not'\napostrophe: it's # comment\ntagged: !!str 'a # b'\nscript: |\n  echo hi # kept\n\n  # kept too\nnext: \"a # b\" # c\n",
            "key: value\nurl: http://x#frag\nquoted: 'it''s # not'\napostrophe: it's\ntagged: !!str 'a # b'\nscript: |\n  echo hi # kept\n\n  # kept too\nnext: \"a # b\"\n",
        );
        strips(
            "yml",
            "- >- # folded\n  # text\n- x\n",
            "- >-\n  # text\n- x\n",
        );
    }

    #[test]
    fn toml() {
        strips(
            "toml",
            "# comment\ntitle = \"a # b\" # trailing\npath = 'C:\\#'\ntext = \"\"\"\n# not a comment\n\n\"\"\"\n[table] # t\n",
            "title = \"a # b\"\npath = 'C:\\#'\ntext = \"\"\"\n# not a comment\n\n\"\"\"\n[table]\n",
        );
    }

    #[test]
    fn perl() {
        strips(
            "perl",
            "#!/usr/bin/perl\n# comment\nmy $s = \"# not\";\n$s =~ s/#//g; # trailing stays\nmy @a = qw(\n# in qw\n);\nprint $#a;\n",
            "#!/usr/bin/perl\nmy $s = \"# not\";\n$s =~ s/#//g; # trailing stays\nmy @a = qw(\n# in qw\n);\nprint $#a;\n",
        );
        keeps("perl", "print 1;\n\n=pod\n\n# doc\n\n=cut\n");
        keeps("pl", "print <<\"EOT\";\n# text\nEOT\n");
    }

    #[test]
    fn r() {
        strips(
            "r",
            "# comment\nx <- \"# not\" # trailing\ny <- r\"(# raw)\"\n",
            "x <- \"# not\"\ny <- r\"(# raw)\"\n",
        );
    }

    #[test]
    fn dockerfile() {
        strips(
            "dockerfile",
            "# syntax=docker/dockerfile:1\n# comment\nFROM alpine # not a comment\nRUN echo \"#\" # still not\n\n",
            "# syntax=docker/dockerfile:1\nFROM alpine # not a comment\nRUN echo \"#\" # still not\n",
        );
        keeps("dockerfile", "RUN <<EOF\n# text\nEOF\n");
    }

    #[test]
    fn makefile() {
        strips(
            "makefile",
            "# comment\nCC = gcc # trailing\nHASH = \\#\nX = $(subst #,-,$(Y))\n\nall:\n\techo \"# recipe\" # kept\n",
            "CC = gcc\nHASH = \\#\nX = $(subst #,-,$(Y))\nall:\n\techo \"# recipe\" # kept\n",
        );
        keeps("make", "define X\n# kept\nendef\n");
    }

    #[test]
    fn sql() {
        strips(
            "sql",
            "-- comment\nSELECT '--not' AS a, \"col--x\" /* inline */ FROM t; -- trailing\n/*+ INDEX(t) */\nSELECT $$ -- body $$, $1;\n",
            "SELECT '--not' AS a, \"col--x\" /* inline */ FROM t;\n/*+ INDEX(t) */\nSELECT $$ -- body $$, $1;\n",
        );
        keeps("sql", "SELECT 'it\\'s -- x';\n-- c\n");
        keeps("sql", "# mysql comment\nSELECT 1;\n");
    }

    #[test]
    fn lua() {
        strips(
            "lua",
            "-- comment\n--[[ long\ncomment ]]\n--[==[ another ]] still ]==]\nlocal s = [[ -- not ]] -- trailing\nlocal t = \"--\" .. '--'\n",
            "local s = [[ -- not ]]\nlocal t = \"--\" .. '--'\n",
        );
    }

    #[test]
    fn haskell() {
        strips(
            "haskell",
            "{-# LANGUAGE OverloadedStrings #-}\n-- | Doc.\nmodule Main where\n{- block {- nested -} -}\nmain :: IO ()\nmain = do\n  let s = \"-- not\" -- trailing\n      c = '\"'\n      f' = foldl' (+) 0\n  x --> y\n",
            "{-# LANGUAGE OverloadedStrings #-}\nmodule Main where\nmain :: IO ()\nmain = do\n  let s = \"-- not\"\n      c = '\"'\n      f' = foldl' (+) 0\n  x --> y\n",
        );
        keeps("hs", "q = [sql| SELECT 1 -- x |]\n");
    }

    // When the lexer is unsure.

    #[test]
    fn unterminated_literals_leave_the_block_alone() {
        keeps("rust", "let s = \"abc // c\n");
        keeps("rust", "/* open\nx();\n");
        keeps("python", "s = 'abc\n# c\n");
        keeps("js", "s = `abc ${x\n// c\n");
        keeps("lua", "s = [[ abc\n-- c\n");
    }

    #[test]
    fn unsure_constructs_leave_the_block_alone() {
        keeps("js", "return <div>it's // text</div>; // c\n");
        keeps("js", "x = a ? http://b : c; // c\n");
        keeps("go", "// #include <stdio.h>\nimport \"C\"\n");
    }

    #[test]
    fn stripping_never_makes_a_closing_fence() {
        keeps("rust", "``` // c\nx\n");
        keeps("rust", "x \\ // c\ny\n");
    }

    // Large and pathological inputs: correctness only.

    #[test]
    fn megabyte_without_newlines() {
        let text = "word ".repeat(200_000);
        check(safe, &text, text.trim_end());
        check(aggressive, &text, text.trim_end());
        let code = format!("```rust\n{}x", "x /* y */ ".repeat(100_000));
        check(aggressive, &code, &code);
        let input = &code[..code.len() - 1];
        check(aggressive, input, &input[..input.len() - " /* y */ ".len()]);
    }

    #[test]
    fn megabyte_of_one_repeated_line() {
        let text = "the same line\n".repeat(80_000);
        check(safe, &text, &text);
        check(
            aggressive,
            &text,
            "the same line\n[… previous line repeated 79999 more times]\n",
        );
        let log = format!("```log\n{text}```\n");
        check(
            aggressive,
            &log,
            "```log\nthe same line\n[… previous line repeated 79999 more times]\n```\n",
        );
    }

    #[test]
    fn megabyte_of_fences_and_blank_lines() {
        let text = "```\n".repeat(250_000);
        check(safe, &text, &text);
        let text = "\n".repeat(1_000_000);
        check(safe, &text, "\n");
        let text = "`".repeat(1_000_000);
        check(safe, &text, &text);
        let text = format!("{}\nx  \n", "~".repeat(1_000_000));
        check(aggressive, &text, &text);
    }

    #[test]
    fn pathological_nesting() {
        let n = 100_000;
        keeps("rust", &format!("{}\n", "/*".repeat(n)));
        strips(
            "rust",
            &format!("x();\n{}{}\ny();\n", "/*".repeat(n), "*/".repeat(n)),
            "x();\ny();\n",
        );
        keeps("haskell", &format!("{}\n", "{-".repeat(n)));
        let templates = format!("a = {}1{};\n", "`${".repeat(n), "}`".repeat(n));
        strips("js", &format!("{}// c\n", templates), &templates);
        keeps("js", &format!("a = {}\n", "`${".repeat(n)));
        let quote = format!("q{}{}; # c\n", "{".repeat(n), "}".repeat(n));
        keeps("perl", &quote);
        keeps("lua", &format!("{}\n", "[=".repeat(n)));
        keeps("sh", &format!("{}\n", "\\".repeat(2 * n)));
        let depth = format!("X = {}{}\n", "$(".repeat(n), ")".repeat(n));
        strips("make", &format!("{depth}# c\n"), &depth);
        keeps("yaml", &format!("{}\n", "!a'".repeat(n)));
    }

    // Properties over generated inputs.

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const FENCES: &[&str] = &[
        "```",
        "```rust",
        "```python",
        "~~~js",
        "````text",
        "```log",
        "```yaml",
        "```sh",
        "```c",
        "```sql",
        "```haskell",
        "```lua",
        "```ruby",
        "```go",
        "```toml",
        "```unknown",
        "   ```Rust,ignore",
        "``` a`b",
        "~~~",
        "````",
        "    ```",
    ];

    const LINES: &[&str] = &[
        "",
        " ",
        "\t",
        "text",
        "text  ",
        "  indented",
        "x = 1 // c",
        "y = 2 # c",
        "z -- c",
        "/* a */",
        "/* open",
        "close */",
        "s = \"// # -- /*\"",
        "c = '\"' // q",
        "'a",
        "`t ${x} // t`",
        "r#\"//\"#",
        "\"\"\"",
        "'''",
        "{- x -}",
        "--[[",
        "]]",
        "key: |",
        "  # in block",
        "x \\",
        "\\",
        "repeat",
        "repeat",
        "repeat  ",
        MARKER_2,
        "é … ü",
        "<<EOF",
        "http://x",
        "#!/bin/sh",
        "#[attr]",
        "#include <a>",
        "``` // c",
    ];

    const ENDINGS: &[&str] = &["\n", "\n", "\n", "\r\n", "\r\r\n"];

    fn document(rng: &mut Rng) -> String {
        let mut text = String::new();
        for _ in 0..rng.below(30) {
            let line = if rng.below(5) == 0 {
                rng.pick(FENCES)
            } else {
                rng.pick(LINES)
            };
            let times = if rng.below(4) == 0 {
                1 + rng.below(5)
            } else {
                1
            };
            for _ in 0..times {
                text.push_str(line);
                text.push_str(rng.pick(ENDINGS));
            }
        }
        if rng.below(3) == 0 {
            text.truncate(text.trim_end_matches(['\r', '\n']).len());
        }
        text
    }

    #[test]
    fn generated_documents_keep_the_invariants() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for _ in 0..4000 {
            invariants(&document(&mut rng));
        }
    }

    #[test]
    fn random_code_in_every_language_keeps_the_invariants() {
        const PIECES: &[&str] = &[
            "a", "b", " ", " ", "\n", "\n", "\"", "'", "`", "/", "*", "#", "-", "{", "}", "[", "]",
            "=", "\\", "$", "<", "(", ")", "|", "%", "?", "!", "@", "r", "R", "q", "s", ":", "\t",
            "\r\n", "é", ";", "&", ">", ".", "+", "~", "0", "1",
        ];
        let mut rng = Rng(0x0dd_ba11);
        let tags = LANGUAGES
            .iter()
            .map(|(tag, _)| *tag)
            .chain(LOG_TAGS.iter().copied());
        for tag in tags {
            for _ in 0..300 {
                let len = rng.below(60);
                let body: String = (0..len).map(|_| rng.pick(PIECES)).collect();
                invariants(&format!("```{tag}\n{body}\n```\n"));
            }
        }
    }
}
