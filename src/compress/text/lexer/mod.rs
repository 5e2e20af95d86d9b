//! The lexer of fenced code: walks a block byte by byte, telling comments
//! from code and string literals for the language of the fence. One file
//! per language family holds what only that family has.

mod c_like;
mod comments;
mod data;
mod scripting;
mod strings;

use super::*;

impl<'a> Lexer<'a> {
    pub(crate) fn new(lang: Lang, src: &'a [u8]) -> Lexer<'a> {
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

    pub(crate) fn run(mut self) -> Lex<Lexed> {
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
    pub(crate) fn check_body(&self) -> Lex<()> {
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

    pub(crate) fn step(&mut self) -> Lex<()> {
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

    pub(crate) fn newline(&mut self) {
        if std::mem::take(&mut self.block_scalar) && self.yaml_block_scalar() {
            return;
        }
        self.pos += 1;
        self.start_line();
    }

    pub(crate) fn start_line(&mut self) {
        self.line_start = self.pos;
        self.indent_only = true;
        self.word_start = true;
        self.scalar_start = true;
    }

    /// Moves to `end`, past a token that may span lines.
    pub(crate) fn jump(&mut self, end: usize) {
        if let Some(newline) = memrchr(b'\n', &self.src[self.pos..end]) {
            self.line_start = self.pos + newline + 1;
        }
        self.pos = end;
    }

    /// Records a string-like literal ending at `end` and moves past it.
    pub(crate) fn literal_span(&mut self, start: usize, end: usize) {
        if memchr(b'\n', &self.src[start..end]).is_some() {
            self.lexed.strings.push(start..end);
        }
        self.jump(end);
        self.prev = Prev::Value;
        self.word_start = false;
        self.scalar_start = false;
    }

    // Comments.

    /// Whether the comment `start..end` means something to a tool and must
    /// stay.
    pub(crate) fn keep(&self, start: usize, end: usize) -> bool {
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

    pub(crate) fn code(&mut self, byte: u8) -> Lex<()> {
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

    pub(crate) fn is_word_start(&self, byte: u8) -> bool {
        byte.is_ascii_alphabetic()
            || byte == b'_'
            || byte >= 0x80
            || (byte == b'$' && matches!(self.lang, Lang::Js | Lang::Php))
    }

    pub(crate) fn is_word_byte(&self, byte: u8) -> bool {
        self.is_word_start(byte)
            || byte.is_ascii_digit()
            || (byte == b'\'' && self.lang == Lang::Haskell)
    }

    pub(crate) fn word(&mut self) -> Lex<()> {
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

    pub(crate) fn number(&mut self) {
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

    pub(crate) fn open_brace(&mut self) {
        if let Some(depth) = self.templates.last_mut() {
            *depth += 1;
        }
        if self.make_depth > 0 {
            self.make_depth += 1;
        }
    }

    /// Whether the `}` at `pos` closes a template literal's interpolation.
    pub(crate) fn close_brace(&mut self) -> bool {
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
}

/// Whether a Perl or Ruby `<<` is followed by a here-document's terminator.
pub(crate) fn heredoc_follows(lang: Lang, rest: &[u8]) -> bool {
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

pub(crate) fn is_docker_directive(comment: &[u8]) -> bool {
    let text = comment[1..].trim_ascii_start();
    let name = text.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let key = &text[..name];
    text[name..].trim_ascii_start().starts_with(b"=")
        && ["syntax", "escape", "check"]
            .iter()
            .any(|directive| key.eq_ignore_ascii_case(directive.as_bytes()))
}

pub(crate) fn is_haskell_symbol(byte: u8) -> bool {
    b"!#$%&*+./<=>?@\\^|-~:".contains(&byte)
}

/// The level of the Lua long bracket (`[[`, `[==[`) opening at `at`.
pub(crate) fn long_bracket(src: &[u8], at: usize) -> Option<usize> {
    if src.get(at) != Some(&b'[') {
        return None;
    }
    let level = leading(src.get(at + 1..)?, b'=');
    (src.get(at + 1 + level) == Some(&b'[')).then_some(level)
}

pub(crate) fn closing_bracket(open: u8) -> Option<u8> {
    match open {
        b'(' => Some(b')'),
        b'[' => Some(b']'),
        b'{' => Some(b'}'),
        b'<' => Some(b'>'),
        _ => None,
    }
}

/// Whether `byte` can delimit a Ruby percent literal or a Perl quote.
pub(crate) fn is_delimiter(byte: u8) -> bool {
    byte.is_ascii_punctuation() && byte != b'\\' && byte != b'_'
}

pub(crate) fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

/// Past the escape sequence whose backslash is at `at` (a `\r\n` after it
/// counts as one character).
pub(crate) fn escape_end(src: &[u8], at: usize) -> Lex<usize> {
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
pub(crate) fn extend(src: &[u8], end: usize, quote: u8, max: usize) -> usize {
    end + leading_up_to(&src[end..], quote, max)
}

/// The end of the content of the line containing `from` (before its `\n`
/// or `\r\n`).
pub(crate) fn line_end(src: &[u8], from: usize) -> usize {
    match memchr(b'\n', &src[from..]) {
        Some(offset) if offset > 0 && src[from + offset - 1] == b'\r' => from + offset - 1,
        Some(offset) => from + offset,
        None => src.len(),
    }
}

pub(crate) fn starts_with_word(text: &[u8], word: &[u8]) -> bool {
    text.starts_with(word) && text.get(word.len()).is_none_or(u8::is_ascii_whitespace)
}

pub(crate) fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// How many times `byte` starts `bytes`.
pub(crate) fn leading(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().take_while(|&&b| b == byte).count()
}

/// How many times, up to `max`, `byte` starts `bytes`.
pub(crate) fn leading_up_to(bytes: &[u8], byte: u8, max: usize) -> usize {
    bytes.iter().take(max).take_while(|&&b| b == byte).count()
}

/// How many spaces and tabs start `bytes`.
pub(crate) fn leading_blanks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// Whether `bytes` is nothing but spaces, tabs and carriage returns.
pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// `end` moved back over the spaces, tabs and carriage returns before it,
/// down to `start`.
pub(crate) fn trim_blank_end(bytes: &[u8], start: usize, end: usize) -> usize {
    start
        + bytes[start..end]
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .map_or(0, |last| last + 1)
}
