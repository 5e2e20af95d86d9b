//! Query and data languages (SQL, Haskell, YAML): dollar quotes,
//! quasiquotes, block scalars.

use super::super::*;
use super::*;

impl Lexer<'_> {
    /// PostgreSQL dollar quotes: `$$…$$`, `$tag$…$tag$`.
    pub(crate) fn dollar_quoted(&self) -> Lex<Option<usize>> {
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

    /// Whether a Haskell quasi-quote (`[name|`) starts at `pos`.
    pub(crate) fn quasiquote(&self) -> bool {
        let rest = &self.src[self.pos + 1..];
        let name = rest
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'\''))
            .count();
        name > 0 && rest.get(name) == Some(&b'|')
    }

    /// Whether the `|` or `>` at `pos` ends its line as a YAML block scalar
    /// indicator (chomping and indentation indicators, a comment allowed).
    pub(crate) fn block_indicator(&self) -> bool {
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
    pub(crate) fn yaml_block_scalar(&mut self) -> bool {
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
