//! Variable substitution in instruction values, the way BuildKit's shell
//! lexer does it (not a shell: no globbing, no command substitution):
//! `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`,
//! `${VAR:?msg}`, `${VAR?msg}`; quotes are removed, nothing expands inside
//! single quotes, and the escape character makes the next one literal.

/// Looks a variable up: `None` when it is not set at all (`${V-x}` and
/// `${V:-x}` differ on set-but-empty).
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes one value (ENV and LABEL values, WORKDIR, USER, paths):
/// whitespace is kept, quotes are removed.
pub(super) fn word(s: &str, escape: char, lookup: Lookup) -> Result<String, String> {
    let mut lex = Lex::new(s, escape, lookup, false);
    let mut acc = Acc::default();
    lex.run(None, &mut acc)?;
    Ok(acc.whole)
}

/// Substitutes and splits into words on unquoted whitespace, including
/// whitespace that an unquoted `$VAR` brings (EXPOSE).
pub(super) fn words(s: &str, escape: char, lookup: Lookup) -> Result<Vec<String>, String> {
    let mut lex = Lex::new(s, escape, lookup, false);
    let mut acc = Acc::default();
    lex.run(None, &mut acc)?;
    acc.finish();
    Ok(acc.words)
}

/// Substitutes a heredoc body: quotes are text there (a file's `"` stays),
/// only variables and the escape before `$` or itself are processed.
pub(super) fn heredoc(s: &str, escape: char, lookup: Lookup) -> Result<String, String> {
    let mut lex = Lex::new(s, escape, lookup, true);
    let mut acc = Acc::default();
    lex.run(None, &mut acc)?;
    Ok(acc.whole)
}

/// What has been produced so far: the whole string, and the words it
/// splits into.
#[derive(Default)]
struct Acc {
    whole: String,
    words: Vec<String>,
    cur: String,
    /// The current word exists even if empty (`""` is a word).
    in_word: bool,
}

impl Acc {
    /// Text that splits on whitespace (unquoted text and expansions).
    fn split(&mut self, s: &str) {
        for c in s.chars() {
            self.whole.push(c);
            if c.is_whitespace() {
                self.finish();
            } else {
                self.cur.push(c);
                self.in_word = true;
            }
        }
    }

    /// Text that never splits (quoted or escaped).
    fn raw(&mut self, s: &str) {
        self.whole.push_str(s);
        self.cur.push_str(s);
        self.in_word = true;
    }

    fn finish(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.cur));
        }
        self.in_word = false;
    }
}

struct Lex<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: Lookup<'a>,
    /// Heredoc bodies: quotes are plain characters.
    raw_quotes: bool,
}

impl<'a> Lex<'a> {
    fn new(s: &str, escape: char, lookup: Lookup<'a>, raw_quotes: bool) -> Self {
        Lex {
            chars: s.chars().collect(),
            pos: 0,
            escape,
            lookup,
            raw_quotes,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Processes until `stop` (consumed) or the end. Returns whether `stop`
    /// was found, so `${…}` can tell a missing `}`.
    fn run(&mut self, stop: Option<char>, acc: &mut Acc) -> Result<bool, String> {
        while let Some(c) = self.next() {
            if Some(c) == stop {
                return Ok(true);
            }
            match c {
                '\'' if !self.raw_quotes => acc.raw(&self.single_quoted()?),
                '"' if !self.raw_quotes => acc.raw(&self.double_quoted()?),
                '$' => {
                    let v = self.dollar()?;
                    acc.split(&v)
                }
                c if c == self.escape && self.raw_quotes => match self.peek() {
                    Some(n) if n == '$' || n == self.escape => {
                        self.pos += 1;
                        acc.raw(&n.to_string())
                    }
                    _ => acc.raw(&c.to_string()),
                },
                c if c == self.escape => {
                    if let Some(n) = self.next() {
                        acc.raw(&n.to_string())
                    }
                }
                c => acc.split(&c.to_string()),
            }
        }
        Ok(false)
    }

    /// After `'`: everything up to the next `'`, literally.
    fn single_quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
            }
        }
    }

    /// After `"`: variables expand; the escape character escapes only `"`,
    /// `$` and itself, and is kept before anything else.
    fn double_quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some('"') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n)
                    }
                    Some(_) => out.push(c),
                    None => {}
                },
                Some(c) => out.push(c),
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    )
                }
            }
        }
    }

    /// After `$`: a name, `{…}`, or a literal `$` when neither follows.
    fn dollar(&mut self) -> Result<String, String> {
        if self.peek() == Some('{') {
            self.pos += 1;
            return self.braced();
        }
        let name = self.name();
        if name.is_empty() {
            return Ok("$".to_string());
        }
        Ok((self.lookup)(&name).unwrap_or_default())
    }

    /// A variable name: letters, digits and `_`; a run of digits or one
    /// special parameter character stands alone, as in the shell.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(|d| d.is_ascii_digit()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            Some(c) if "*@#?-$!".contains(c) => {
                self.pos += 1;
                return c.to_string();
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After `${`: the name, then `}` or a modifier and its word.
    fn braced(&mut self) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution: missing variable name in ${}".to_string());
        }
        let value = (self.lookup)(&name);
        let c = self.next().ok_or("syntax error: missing '}'")?;
        if c == '}' {
            return Ok(value.unwrap_or_default());
        }
        let colon = c == ':';
        let op = if colon {
            self.next().ok_or("syntax error: missing '}'")?
        } else {
            c
        };
        if !matches!(op, '-' | '+' | '?') {
            return Err(format!("unsupported modifier ({op}) in substitution"));
        }
        let word = self.modifier_word()?;
        // `:` makes an empty value count as unset.
        let set = value.as_ref().is_some_and(|v| !colon || !v.is_empty());
        match op {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => Ok(word),
            '+' if set => Ok(word),
            '+' => Ok(String::new()),
            _ if set => Ok(value.unwrap_or_default()),
            _ if word.is_empty() => Err(format!("{name}: is not allowed to be unset")),
            _ => Err(format!("{name}: {word}")),
        }
    }

    /// The word after a modifier, up to `}`, itself substituted.
    fn modifier_word(&mut self) -> Result<String, String> {
        let mut acc = Acc::default();
        if !self.run(Some('}'), &mut acc)? {
            return Err("syntax error: missing '}'".to_string());
        }
        Ok(acc.whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "E" => Some(String::new()),
            "S" => Some("x y".into()),
            _ => None,
        }
    }

    fn w(s: &str) -> Result<String, String> {
        word(s, '\\', &env)
    }

    #[test]
    fn variables_expand_with_modifiers() {
        assert_eq!(w("$A ${A}b $Nope-"), Ok("a ab -".into()));
        assert_eq!(w("${E:-d} ${E-d} ${U-d} ${U:-$A}"), Ok("d  d a".into()));
        assert_eq!(w("${A:+x} ${E:+x}|${E+x} ${U+x}|"), Ok("x |x |".into()));
        assert_eq!(w("${A?no}"), Ok("a".into()));
        assert_eq!(w("${U?no way}"), Err("U: no way".into()));
        assert_eq!(w("${U:?}"), Err("U: is not allowed to be unset".into()));
        assert_eq!(w("$ $/ $"), Ok("$ $/ $".into()));
    }

    #[test]
    fn quotes_and_escapes_decide_what_expands() {
        assert_eq!(
            w(r#"'$A' "$A" \$A "\$A" "\x""#),
            Ok(r#"$A a $A $A \x"#.into())
        );
        assert_eq!(word("`$A \\", '`', &env), Ok("$A \\".into()));
        assert_eq!(
            w("'open"),
            Err("unexpected end of statement while looking for matching single-quote".into())
        );
        assert_eq!(
            w("\"open"),
            Err("unexpected end of statement while looking for matching double-quote".into())
        );
        assert_eq!(w("${A"), Err("syntax error: missing '}'".into()));
        assert_eq!(w("${A:-x"), Err("syntax error: missing '}'".into()));
        assert_eq!(
            w("${A#x}"),
            Err("unsupported modifier (#) in substitution".into())
        );
        assert_eq!(
            w("${}"),
            Err("bad substitution: missing variable name in ${}".into())
        );
    }

    #[test]
    fn words_split_unquoted_expansions() {
        let got = words(r#"$S "$S" a\ b '' c"#, '\\', &env).unwrap();
        assert_eq!(got, ["x", "y", "x y", "a b", "", "c"]);
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let got = heredoc("\"$A\" '$A' \\$A \\n\n", '\\', &env).unwrap();
        assert_eq!(got, "\"a\" 'a' $A \\n\n");
    }
}
