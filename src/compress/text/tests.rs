//! Tests of the text transforms.

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
    let expected = "Intro\n```python  \r\n  x = 1  \r\n\r\n\r\n\r\n  y = 2\t\r\n```  \r\nOutro\n";
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
