//! Splitting an instruction's arguments into words at parse time, before
//! any substitution. Quotes and escapes stay in the words: they are
//! removed when the word is substituted (see `lex`), because in Docker a
//! quoted `$VAR` and an escaped `\$VAR` mean different things there.

/// Splits on unquoted whitespace, keeping quotes and escapes in the words
/// (BuildKit's word split for ENV, LABEL and ARG). A quoted empty word
/// (`a=""`) is a word; the escape character escapes anything outside
/// single quotes, and a lone one at the very end is dropped.
pub(super) fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if let Some(q) = quote {
            if ch == escape && q != '\'' {
                match chars.next() {
                    Some(next) => {
                        word.push(ch);
                        word.push(next);
                    }
                    None => quote = None,
                }
                continue;
            }
            word.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        if ch.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                words.push(std::mem::take(&mut word));
            }
            word.clear();
            in_word = false;
            blank_ok = false;
            continue;
        }
        in_word = true;
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
            word.push(ch);
        } else if ch == escape {
            if let Some(next) = chars.next() {
                word.push(ch);
                word.push(next);
            }
        } else {
            word.push(ch);
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Splits on runs of whitespace, quotes or not (BuildKit's split for FROM,
/// EXPOSE, and the shell forms of COPY, ADD and VOLUME: there a quoted
/// path with a space is two words, which is why Docker documents the JSON
/// form for such paths).
pub(super) fn fields(rest: &str) -> Vec<String> {
    rest.split([' ', '\t', '\u{b}', '\u{c}', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// A heredoc opener found on an instruction line (`<<EOF`, `<<-"EOF"`,
/// `3<<EOF`); the body is read by the line reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    /// The word as written, so COPY can tell which source it replaces.
    pub word: String,
    pub fd: Option<u32>,
    pub chomp: bool,
    pub name: String,
    pub expand: bool,
}

/// The heredoc openers of a line, in order. A word is one when it is
/// `[digits]<<[-]NAME` with a non-empty NAME containing no `<`; a NAME
/// with quotes or escapes in it turns expansion of the body off, as in the
/// shell.
pub(super) fn heredoc_markers(line: &str, escape: char) -> Vec<Marker> {
    split_words(line, escape)
        .into_iter()
        .filter_map(|w| marker(&w, escape))
        .collect()
}

fn marker(word: &str, escape: char) -> Option<Marker> {
    let at = word.find("<<")?;
    let digits = &word[..at];
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &word[at + 2..];
    let chomp = rest.starts_with('-');
    if chomp {
        rest = &rest[1..];
    }
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote(rest, escape);
    if name.is_empty() {
        return None;
    }
    Some(Marker {
        word: word.to_string(),
        fd: if digits.is_empty() {
            None
        } else {
            digits.parse().ok()
        },
        chomp,
        expand: name == rest,
        name,
    })
}

/// Removes quotes and escape characters without substituting anything
/// (for heredoc delimiters, which are never expanded).
fn unquote(s: &str, escape: char) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => out.push(c),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == escape => out.extend(chars.next()),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_keeps_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"a=1 b="x y" c='p q' d=\ e"#, '\\'),
            ["a=1", r#"b="x y""#, "c='p q'", r"d=\ e"]
        );
        assert_eq!(split_words(r#"a="" "" b"#, '\\'), [r#"a="""#, r#""""#, "b"]);
        assert_eq!(split_words("a \\", '\\'), ["a"]);
        assert_eq!(split_words("a=`\"b c", '`'), ["a=`\"b", "c"]);
        assert_eq!(split_words("a=`\"b` c", '`'), ["a=`\"b` c"]);
    }

    #[test]
    fn fields_ignore_quotes() {
        assert_eq!(fields("\"a b\"  c\t d"), ["\"a", "b\"", "c", "d"]);
    }

    #[test]
    fn markers_are_found_with_their_quoting() {
        let m = heredoc_markers("cat <<EOF 3<<-'END' x<<y <<\"A\"B", '\\');
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.name.as_str(), m.fd, m.chomp, m.expand))
            .collect();
        assert_eq!(
            got,
            [
                ("EOF", None, false, true),
                ("END", Some(3), true, false),
                ("AB", None, false, false)
            ]
        );
        assert!(heredoc_markers("a << b <<", '\\').is_empty());
    }
}
