//! Scripting languages (Ruby, Perl, shell, R, Lua): percent literals,
//! quote operators, raw strings, long brackets, `$` expansions.

use super::super::*;
use super::*;

impl Lexer<'_> {
    /// The end of a Lua long bracket whose content starts at `from`.
    pub(crate) fn long_bracket_end(&self, from: usize, level: usize) -> Lex<usize> {
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
    pub(crate) fn percent_literal(&self) -> Lex<Option<usize>> {
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
    pub(crate) fn ruby_char(&self) -> Option<usize> {
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

    /// R raw strings: `r"(…)"`, `R'[…]'`, `r"--{…}--"`.
    pub(crate) fn r_raw(&self, word: &[u8], after: usize) -> Lex<Option<usize>> {
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
    pub(crate) fn perl_quote(&self, word: &[u8], start: usize, after: usize) -> Lex<Option<usize>> {
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

    /// Perl and Ruby special variables (`$'`, `$"`, `$#`, `$/`...); Make
    /// references (`$(`, `${`) and `$$`. The length to skip.
    pub(crate) fn dollar(&mut self) -> Option<usize> {
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
}
