//! From physical lines to instructions' text: parser directives, comments,
//! line continuations and heredoc bodies, with the line numbers errors
//! need. What an instruction means is `parse`'s business.

use super::ast::Heredoc;
use super::words::heredoc_markers;
use super::Error;

/// What the directives at the top of the file said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
}

/// One instruction's text, joined across continuations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Logical {
    pub line: usize,
    pub end_line: usize,
    /// The instruction with continuations removed and comment lines dropped.
    pub text: String,
    /// The source lines as written, heredoc bodies included.
    pub original: String,
    /// Bodies of the heredocs the text opens, in order.
    pub heredocs: Vec<(String, Heredoc)>,
}

/// The instructions that may open heredocs (BuildKit reads bodies only for
/// these; elsewhere `<<EOF` is just text).
const HEREDOC_KEYWORDS: &[&str] = &["run", "copy", "add"];

/// Splits a file into its directives and its instructions' text.
pub(super) fn split(file: &str, text: &str) -> Result<(Directives, Vec<Logical>), Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let (directives, mut i) = directives(file, &lines)?;
    let mut out = Vec::new();
    while i < lines.len() {
        let first = lines[i].trim_start();
        if first.is_empty() || first.starts_with('#') {
            i += 1;
            continue;
        }
        let (mut logical, next) = join_continuations(&lines, i, directives.escape);
        i = next;
        i = read_heredocs(file, &lines, i, directives.escape, &mut logical)?;
        logical.original = lines[logical.line - 1..i].join("\n");
        logical.end_line = i;
        out.push(logical);
    }
    Ok((directives, out))
}

/// Reads the directives at the top: `# name=value` lines for a known name,
/// before any other line. An unknown name, a comment, an empty line or an
/// instruction ends them (Docker's rule: later ones are plain comments).
/// Returns them and the index of the first line after them.
fn directives(file: &str, lines: &[&str]) -> Result<(Directives, usize), Error> {
    let mut d = Directives {
        escape: '\\',
        syntax: None,
        check: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, value)) = directive(line.trim_start()) else {
            return Ok((d, i));
        };
        let err = |message: String| Error::Line {
            file: file.to_string(),
            line: i + 1,
            message,
        };
        if seen.contains(&name) {
            return Err(err(format!("only one {name} parser directive can be used")));
        }
        match name.as_str() {
            "escape" => {
                d.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(err(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        )))
                    }
                }
            }
            "syntax" => d.syntax = Some(value),
            "check" => d.check = Some(value),
            _ => return Ok((d, i)),
        }
        seen.push(name);
    }
    Ok((d, lines.len()))
}

/// `# name = value` → (lowercased name, value), if the line has that shape.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let name_len = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || (*i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

/// Strips a trailing escape character (and spaces or tabs after it);
/// true when there was one, i.e. the instruction continues. An escaped
/// escape (`\\` at the end) is a literal one and does not continue, as
/// BuildKit has it since 2020 (`ENV PATH C:\\dir\\`).
pub(super) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let run = t.chars().rev().take_while(|c| *c == escape).count();
    if run % 2 == 0 {
        return (line, false);
    }
    (&t[..t.len() - escape.len_utf8()], true)
}

/// Joins an instruction's lines from `start`: while a line ends in the
/// escape character the next one is appended; comment lines and empty
/// lines in between are skipped, as BuildKit does (it warns about empty
/// ones). Returns the instruction and the index after its last line.
fn join_continuations(lines: &[&str], start: usize, escape: char) -> (Logical, usize) {
    let (first, mut more) = trim_continuation(lines[start].trim_start(), escape);
    let mut text = first.to_string();
    let mut i = start + 1;
    while more && i < lines.len() {
        let line = lines[i];
        i += 1;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (part, again) = trim_continuation(line, escape);
        text.push_str(part);
        more = again;
    }
    let logical = Logical {
        line: start + 1,
        end_line: i,
        text,
        original: String::new(),
        heredocs: Vec::new(),
    };
    (logical, i)
}

/// Reads the bodies of the heredocs the instruction opens, from line
/// index `i` on; returns the index after the last body's delimiter.
fn read_heredocs(
    file: &str,
    lines: &[&str],
    mut i: usize,
    escape: char,
    logical: &mut Logical,
) -> Result<usize, Error> {
    // `ONBUILD RUN <<EOF` opens a heredoc too: the trigger's keyword counts.
    let mut words = logical.text.split_whitespace().map(str::to_ascii_lowercase);
    let mut keyword = words.next().unwrap_or_default();
    if keyword == "onbuild" {
        keyword = words.next().unwrap_or_default();
    }
    if !HEREDOC_KEYWORDS.contains(&keyword.as_str()) {
        return Ok(i);
    }
    for m in heredoc_markers(&logical.text, escape) {
        let mut content = String::new();
        let mut terminated = false;
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            let candidate = if m.chomp {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if candidate == m.name {
                terminated = true;
                break;
            }
            content.push_str(candidate);
            content.push('\n');
        }
        if !terminated {
            return Err(Error::Line {
                file: file.to_string(),
                line: logical.line,
                message: format!("unterminated heredoc {:?}", m.name),
            });
        }
        let doc = Heredoc {
            name: m.name,
            content,
            expand: m.expand,
            chomp: m.chomp,
            fd: m.fd,
        };
        logical.heredocs.push((m.word, doc));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(usize, usize, String)> {
        let (_, l) = split("f", src).unwrap();
        l.into_iter()
            .map(|l| (l.line, l.end_line, l.text))
            .collect()
    }

    #[test]
    fn continuations_skip_comments_and_empty_lines() {
        let got = texts("FROM a\nRUN x \\\n# c\n\n  y \\  \n z\nRUN w\n");
        assert_eq!(
            got,
            [
                (1, 1, "FROM a".to_string()),
                (2, 6, "RUN x   y  z".to_string()),
                (7, 7, "RUN w".to_string())
            ]
        );
    }

    #[test]
    fn a_continuation_at_the_end_of_the_file_ends_the_instruction() {
        assert_eq!(texts("RUN a \\"), [(1, 1, "RUN a ".to_string())]);
    }

    #[test]
    fn directives_stop_at_the_first_other_line() {
        let (d, l) = split("f", "# syntax=x\n#ESCAPE = `\nRUN a\n").unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(d.syntax.as_deref(), Some("x"));
        assert_eq!(l.len(), 1);
        // An empty line ends the directives: the escape below is a comment.
        let (d, _) = split("f", "\n# escape=`\nRUN a").unwrap();
        assert_eq!(d.escape, '\\');
        // So does an unknown one.
        let (d, _) = split("f", "# foo=bar\n# escape=`\nRUN a").unwrap();
        assert_eq!(d.escape, '\\');
    }

    #[test]
    fn directive_errors_name_the_line() {
        let e = split("f", "# escape=`\n# escape=`\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:2: only one escape parser directive can be used"
        );
        let e = split("f", "# escape=x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1: invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn heredoc_bodies_follow_the_line() {
        let (_, l) = split("f", "RUN <<A <<-B\na\n\tb\nA\n\tc\n\tB\nRUN x\n").unwrap();
        assert_eq!(l[0].end_line, 6);
        assert_eq!(l[0].heredocs[0].1.content, "a\n\tb\n");
        assert_eq!(l[0].heredocs[1].1.content, "c\n");
        assert_eq!(l[1].line, 7);
        let e = split("f", "FROM a\nRUN <<A\nx\n").unwrap_err();
        assert_eq!(e.to_string(), "f:2: unterminated heredoc \"A\"");
    }
}
