//! `.dockerignore` / `.containerignore`: which context paths a build does
//! not see, by Docker's rules, so a context that builds with Docker sends
//! the same files here:
//!
//! - one pattern a line; `#` at the start of a line is a comment; blank
//!   lines and surrounding whitespace are ignored;
//! - patterns are cleaned like paths (`a//b/../c` → `a/c`) and a leading
//!   `/` is dropped: they are always relative to the context root;
//! - `*` and `?` do not cross `/`, `**` matches any number of directories
//!   (none included), `[…]` is a class, `\` escapes;
//! - a path is excluded when a pattern matches it or one of its parent
//!   directories; `!pattern` re-includes; the last matching line wins.

use std::path::{Path, PathBuf};

/// A malformed ignore file line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct IgnoreError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The parsed rules of an ignore file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The cleaned pattern, without `!` (what [`Matcher::patterns`] shows).
    text: String,
    exclusion: bool,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run without `/`.
    Star,
    /// `**` before more pattern: nothing, or anything ending in `/`.
    AnyDirs,
    /// `**` at the end: anything.
    Rest,
    /// `[…]`: ranges, negated or not.
    Class(Vec<(char, char)>, bool),
}

/// The ignore files to look for, in order of precedence: one named after
/// the Containerfile (`app.Containerfile.dockerignore`, next to it), then
/// the context's own. The first that exists is used, the others not.
pub fn candidates(containerfile: &Path, context: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(name) = containerfile.file_name() {
        for ext in ["containerignore", "dockerignore"] {
            let mut n = name.to_os_string();
            n.push(".");
            n.push(ext);
            out.push(containerfile.with_file_name(n));
        }
    }
    out.push(context.join(".containerignore"));
    out.push(context.join(".dockerignore"));
    out
}

impl Matcher {
    /// Parses an ignore file's text; `file` is the name errors give.
    pub fn parse(file: &str, text: &str) -> Result<Matcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| IgnoreError {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            if line.starts_with('#') {
                continue;
            }
            if let Some(p) = pattern_line(line.trim()).map_err(err)? {
                patterns.push(p);
            }
        }
        Ok(Matcher { patterns })
    }

    /// The patterns as cleaned, `!` kept, in order (for `--explain`).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.text))
            .collect()
    }

    /// Whether `path` (relative to the context, `/`-separated) is left
    /// out of the build.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let path = path.trim_start_matches('/');
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut excluded = false;
        for p in &self.patterns {
            // Only a pattern that could change the answer is tried.
            if p.exclusion != excluded {
                continue;
            }
            let hit = matches(&p.tokens, path) || parents.iter().any(|d| matches(&p.tokens, d));
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }
}

/// One line: `None` for a blank one.
fn pattern_line(line: &str) -> Result<Option<Pattern>, String> {
    if line.is_empty() {
        return Ok(None);
    }
    let (exclusion, rest) = match line.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, line),
    };
    if exclusion && rest.is_empty() {
        return Err("illegal exclusion pattern: \"!\"".to_string());
    }
    let mut text = clean(rest);
    if text.len() > 1 && text.starts_with('/') {
        text.remove(0);
    }
    let tokens = compile(&text)?;
    Ok(Some(Pattern {
        text,
        exclusion,
        tokens,
    }))
}

/// Go's `path.Clean`: one `/` between elements, no `.`, `..` resolved
/// (kept at the start of a relative path), `.` for nothing.
pub(super) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for el in p.split('/') {
        match el {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            el => parts.push(el),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// Pattern text → tokens; an unterminated class or a trailing `\` is an
/// error, as Docker reports a bad pattern.
fn compile(p: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                out.push(if i >= chars.len() {
                    Token::Rest
                } else {
                    Token::AnyDirs
                });
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' => {
                let n = chars
                    .get(i)
                    .ok_or(format!("bad pattern {p:?}: trailing \\"))?;
                out.push(Token::Char(*n));
                i += 1;
            }
            '[' => {
                let (class, neg, next) =
                    class(&chars, i).ok_or(format!("bad pattern {p:?}: unterminated ["))?;
                out.push(Token::Class(class, neg));
                i = next;
            }
            c => out.push(Token::Char(c)),
        }
    }
    Ok(out)
}

/// A parsed `[…]`: its ranges, whether negated (`^` or `!`), and the index
/// after its `]`.
type ClassEnd = (Vec<(char, char)>, bool, usize);

/// The class starting after `[` at `i`, or `None` when it never closes.
fn class(chars: &[char], mut i: usize) -> Option<ClassEnd> {
    let neg = matches!(chars.get(i), Some('^') | Some('!'));
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((ranges, neg, i + 1));
        }
        first = false;
        i += 1;
        if c == '\\' {
            c = *chars.get(i)?;
            i += 1;
        }
        let hi = if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|h| *h != ']') {
            i += 2;
            chars[i - 1]
        } else {
            c
        };
        ranges.push((c, hi));
    }
}

/// Whether the whole of `path` matches `tokens`.
fn matches(tokens: &[Token], path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    match_at(tokens, &chars)
}

fn match_at(tokens: &[Token], s: &[char]) -> bool {
    let Some((t, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match t {
        Token::Char(c) => s.first() == Some(c) && match_at(rest, &s[1..]),
        Token::One => s.first().is_some_and(|c| *c != '/') && match_at(rest, &s[1..]),
        Token::Class(ranges, neg) => {
            s.first().is_some_and(|c| {
                *c != '/' && ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *neg
            }) && match_at(rest, &s[1..])
        }
        Token::Star => {
            let run = s.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| match_at(rest, &s[n..]))
        }
        Token::Rest => true,
        Token::AnyDirs => {
            match_at(rest, s) || (0..s.len()).any(|n| s[n] == '/' && match_at(rest, &s[n + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::parse(".dockerignore", text).unwrap()
    }

    #[test]
    fn table_of_paths() {
        // (patterns, path, excluded)
        let rows: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("**/*.md", "docs/a/README.md", true),
            ("**/*.md", "README.md", true),
            ("target", "target/debug/x", true),
            ("/target", "target", true),
            ("./target/", "target/x", true),
            ("a//b/../c", "a/c", true),
            ("docs/**", "docs/a/b", true),
            ("docs/**", "docs", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file/.txt", false),
            ("[a-c]*", "banana", true),
            ("[!a-c]*", "banana", false),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("*\n!keep.md", "keep.md", false),
            ("*\n!keep.md", "other.md", true),
            ("*.md\n!README.md\nREADME.md", "README.md", true),
            ("# comment\n  \n  node_modules  ", "node_modules/x", true),
            ("# comment", "# comment", false),
            ("docs\n!docs/keep", "docs/keep", false),
            ("docs\n!docs/keep", "docs/other", true),
            ("**", "anything/at/all", true),
            ("", "x", false),
        ];
        for (patterns, path, want) in rows {
            assert_eq!(
                m(patterns).is_excluded(path),
                *want,
                "patterns {patterns:?} on {path:?}"
            );
        }
    }

    #[test]
    fn paths_are_cleaned_before_matching() {
        assert!(m("a/b").is_excluded("./a//b"));
        assert!(m("a/b").is_excluded("/a/x/../b"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = Matcher::parse(".dockerignore", "ok\n!\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            ".dockerignore:2: illegal exclusion pattern: \"!\""
        );
        let e = Matcher::parse("x", "a[b").unwrap_err();
        assert_eq!(e.to_string(), "x:1: bad pattern \"a[b\": unterminated [");
    }

    #[test]
    fn patterns_are_shown_cleaned() {
        assert_eq!(m("/a/./b\n! c/").patterns(), ["a/b", "!c"]);
    }

    #[test]
    fn the_containerfile_own_ignore_file_comes_first() {
        let c = candidates(Path::new("/ctx/build/app.Containerfile"), Path::new("/ctx"));
        let want: Vec<PathBuf> = [
            "/ctx/build/app.Containerfile.containerignore",
            "/ctx/build/app.Containerfile.dockerignore",
            "/ctx/.containerignore",
            "/ctx/.dockerignore",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(c, want);
    }

    #[test]
    fn clean_is_go_path_clean() {
        for (i, o) in [
            ("", "."),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("a/./b/", "a/b"),
            ("//a", "/a"),
            ("../../a/..", "../.."),
        ] {
            assert_eq!(clean(i), o, "{i:?}");
        }
    }
}
