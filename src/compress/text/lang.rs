//! The languages whose comments are stripped, by fence tag, and what each
//! one's comments and strings look like.
/// The languages whose comments [`super::aggressive`] strips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
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

pub(crate) const LANGUAGES: &[(&str, Lang)] = &[
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
pub(crate) const GO_DIRECTIVES: &[&[u8]] = &[
    b"//go:",
    b"// +build",
    b"//export ",
    b"//extern ",
    b"//line ",
    b"// Output:",
    b"// Unordered output:",
];

/// JavaScript and TypeScript comments read by compilers and bundlers.
pub(crate) const JS_PRAGMAS: &[&[u8]] = &[b"@ts-", b"@jsx", b"@flow", b"__PURE__"];

/// Ruby magic comments.
pub(crate) const RUBY_MAGIC: &[&[u8]] = &[
    b"coding:",
    b"frozen_string_literal",
    b"shareable_constant_value",
    b"warn_indent",
];

impl Lang {
    pub(crate) fn from_tag(tag: &str) -> Option<Lang> {
        LANGUAGES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(tag))
            .map(|&(_, lang)| lang)
    }

    /// `//` starts a comment.
    pub(crate) fn slash_line(self) -> bool {
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
    pub(crate) fn slash_block(self) -> Option<bool> {
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
    pub(crate) fn multiline_strings(self) -> bool {
        matches!(
            self,
            Lang::Perl | Lang::Php | Lang::R | Lang::Ruby | Lang::Rust | Lang::Shell | Lang::Yaml
        )
    }

    /// Keywords after which a `/` starts a regular expression.
    pub(crate) fn regex_keyword(self, word: &[u8]) -> bool {
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
