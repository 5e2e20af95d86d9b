//! The C family (C, C++, C#, Java, Go, Rust, Swift, JavaScript and
//! TypeScript): raw strings, verbatim strings, regular expression literals,
//! template literals, JSX.

use super::super::*;
use super::*;

impl Lexer<'_> {
    /// Whether a `/` (or Ruby `%(`) at `pos` starts a literal rather than
    /// dividing.
    pub(crate) fn regex_allowed(&self) -> bool {
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

    pub(crate) fn regex(&self) -> Lex<usize> {
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
    pub(crate) fn verbatim(&self) -> Lex<Option<usize>> {
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
    pub(crate) fn swift_raw(&self) -> Lex<Option<usize>> {
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

    /// Rust raw strings: `r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#`.
    pub(crate) fn rust_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
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
    pub(crate) fn cpp_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
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

    /// Lexes a JavaScript template literal from `from` (past its opening
    /// `` ` `` or an interpolation's closing `}` at `start`) to its end or
    /// to the next `${`.
    pub(crate) fn template(&mut self, start: usize, from: usize) -> Lex<()> {
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

    /// Here-documents and JSX, which the lexers do not follow.
    pub(crate) fn angle(&self) -> Lex<()> {
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
}
