//! The README and docs/ are what a clone of the repository has: the README
//! stays short, and every link in them points at a file (and heading) that
//! exists in the repository, never outside it.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 200;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks and inline code spans, line by line
/// (code is where URLs appear as values, not as links).
fn prose(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push(kept);
    }
    out
}

/// The targets of `[text](target)` links in `line`.
fn links(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                found.push(after[..end].trim().to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(path: &Path) -> HashSet<String> {
    let text = fs::read_to_string(path).unwrap();
    let mut fenced = false;
    let mut found = HashSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

/// Every problem with the links of `page`, as a readable line.
/// Targets must lie under `root`.
fn broken_links(page: &Path, root: &Path) -> Vec<String> {
    let text = fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    let name = page
        .strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut problems = Vec::new();
    for (n, line) in prose(&text).iter().enumerate() {
        let at = format!("{name}:{}", n + 1);
        for scheme in ["http://", "https://", "<http", "www."] {
            if line.contains(scheme) {
                problems.push(format!("{at}: a link that leaves the repository: {line}"));
            }
        }
        for target in links(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue; // reported above
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.to_path_buf()
            } else {
                dir.join(file)
            };
            let Ok(path) = path.canonicalize() else {
                problems.push(format!("{at}: {target}: no such file"));
                continue;
            };
            if !path.starts_with(root) {
                problems.push(format!("{at}: {target}: outside the repository"));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_markdown = path.extension().is_some_and(|ext| ext == "md");
                if !is_markdown || !anchors(&path).contains(anchor) {
                    problems.push(format!("{at}: {target}: no such heading"));
                }
            }
        }
    }
    problems
}

#[test]
fn readme_is_short() {
    let text = fs::read_to_string(root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}, the rest belongs in docs/"
    );
}

#[test]
fn every_link_stays_in_the_repository_and_resolves() {
    let problems: Vec<String> = pages()
        .iter()
        .flat_map(|page| broken_links(page, &root()))
        .collect();
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_maps_every_page_of_docs() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    for page in pages().iter().skip(1) {
        let name = page.file_name().unwrap().to_string_lossy();
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "README.md's map of docs/ does not link docs/{name}"
        );
    }
}

#[test]
fn the_checker_sees_broken_links() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    fs::write(
        &page,
        "# Title\n\n[ok](#title) [gone](missing.md) [bad](#nope)\n\
         [out](https://example.com) `https://in.code/is/fine`\n\
         ```\nhttps://in.a.block/is/fine\n```\n",
    )
    .unwrap();
    assert_eq!(links("[a](b) and [c](d#e)"), ["b", "d#e"]);
    assert_eq!(
        slug(" Upstream failures: retries, `fallback`"),
        "upstream-failures-retries-fallback"
    );
    let root = dir.path().canonicalize().unwrap();
    let problems = broken_links(&root.join("page.md"), &root);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("missing.md: no such file"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("#nope: no such heading"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("leaves the repository"),
        "{problems:?}"
    );
}
