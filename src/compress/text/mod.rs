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

mod lang;
mod lexer;
mod lines;
mod repeats;
mod strip;
#[cfg(test)]
mod tests;
mod whitespace;

use lang::*;
use lexer::*;
use lines::*;
use repeats::*;
use strip::*;
use whitespace::*;

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

/// The lexer cannot tell comments from code with confidence.
#[derive(Debug)]
pub(crate) struct Unsure;

pub(crate) type Lex<T> = Result<T, Unsure>;

/// What the lexer found in a code block.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    /// Comments that may be removed, in order.
    pub(crate) comments: Vec<Range<usize>>,
    /// String literals and other verbatim text spanning lines, in order.
    pub(crate) strings: Vec<Range<usize>>,
}

/// The last token, for telling a regular expression from a division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prev {
    /// Start of code, an operator or a keyword: a value may follow.
    Operator,
    /// An identifier.
    Word,
    /// A literal or a closing bracket: an operator follows.
    Value,
}

pub(crate) struct Lexer<'a> {
    pub(crate) lang: Lang,
    pub(crate) src: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) line_start: usize,
    /// Only indentation precedes `pos` on its line.
    pub(crate) indent_only: bool,
    pub(crate) prev: Prev,
    /// JavaScript: the template literals whose `${` interpolation is open,
    /// with the depth of `{` inside each.
    pub(crate) templates: Vec<usize>,
    /// Shell: `pos` starts a word.
    pub(crate) word_start: bool,
    /// YAML: a scalar may start at `pos` (so a quote opens a string).
    pub(crate) scalar_start: bool,
    /// YAML: the line ends with a block scalar indicator (`|`, `>`).
    pub(crate) block_scalar: bool,
    /// Make: depth of `$(`/`${` references, where `#` is not a comment.
    pub(crate) make_depth: usize,
    pub(crate) lexed: Lexed,
}
