//! String literals shared by most languages: single, double and back
//! quotes, escapes, doubled quotes, char literals, delimited quotes.

use super::super::*;
use super::*;

impl Lexer<'_> {
    /// The end of the literal starting at `pos`, if one does.
    pub(crate) fn literal(&self) -> Lex<Option<usize>> {
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

    pub(crate) fn double_quoted(&self) -> Lex<Option<usize>> {
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

    pub(crate) fn single_quoted(&self) -> Lex<Option<usize>> {
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

    pub(crate) fn backquoted(&self) -> Lex<Option<usize>> {
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
    pub(crate) fn char_literal(&self) -> Lex<Option<usize>> {
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
    pub(crate) fn escaped(&self, from: usize, quote: u8, multiline: bool) -> Lex<usize> {
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
    pub(crate) fn plain(
        &self,
        from: usize,
        quote: u8,
        multiline: bool,
        doubled: bool,
    ) -> Lex<usize> {
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
    pub(crate) fn until(&self, from: usize, delimiter: &[u8], escapes: bool) -> Lex<usize> {
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
    pub(crate) fn delimited(&self, open_at: usize) -> Lex<usize> {
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
}
