//! Comments: line, block (nested or not), `#` and `--` comments, Ruby's
//! `=begin`/`=end`, and the comments that carry meaning and are kept.

use super::super::*;
use super::*;

impl Lexer<'_> {
    /// The end of the comment starting at `pos`, if one does.
    pub(crate) fn comment(&self) -> Lex<Option<usize>> {
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
    pub(crate) fn hash_comment(&self) -> bool {
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
    pub(crate) fn haskell_dashes(&self) -> bool {
        let (src, pos) = (self.src, self.pos);
        if !src[pos..].starts_with(b"--") || (pos > 0 && is_haskell_symbol(src[pos - 1])) {
            return false;
        }
        let dashes = leading(&src[pos..], b'-');
        src.get(pos + dashes).is_none_or(|&b| !is_haskell_symbol(b))
    }

    pub(crate) fn line_comment(&self) -> Lex<usize> {
        let end = line_end(self.src, self.pos);
        // A line continuation: the comment goes on, in C and Make.
        if self.src[self.pos..end].trim_ascii_end().last() == Some(&b'\\') {
            return Err(Unsure);
        }
        Ok(end)
    }

    pub(crate) fn block_comment(
        &self,
        open: &[u8; 2],
        close: &[u8; 2],
        nested: bool,
    ) -> Lex<usize> {
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
    pub(crate) fn ruby_doc_end(&self) -> Lex<usize> {
        let src = self.src;
        let mut line = self.pos;
        loop {
            line += memchr(b'\n', &src[line..]).ok_or(Unsure)? + 1;
            if starts_with_word(&src[line..], b"=end") {
                return Ok(line_end(src, line));
            }
        }
    }
}
