//! Variable substitution in instruction values, the way BuildKit's shell
//! lexer does it (not a shell: no globbing, no command substitution):
//! `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`,
//! `${VAR:?msg}`, `${VAR?msg}`, and the pattern forms `${VAR#p}`,
//! `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`, `${VAR//p/r}`
//! (Dockerfile syntax 1.7 and later); quotes are removed, nothing expands inside
//! single quotes, and the escape character makes the next one literal.

/// Looks a variable up: `None` when it is not set at all (`${V-x}` and
/// `${V:-x}` differ on set-but-empty).
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes one value (ENV and LABEL values, WORKDIR, USER, paths):
/// whitespace is kept, quotes are removed.
pub(super) fn word(s: &str, escape: char, lookup: Lookup) -> Result<String, String> {
    let mut lex = Lex::new(s, escape, lookup, false);
    let mut acc = Acc::default();
    lex.run(&[], &mut acc)?;
    Ok(acc.whole)
}

/// Substitutes and splits into words on unquoted whitespace, including
/// whitespace that an unquoted `$VAR` brings (EXPOSE).
pub(super) fn words(s: &str, escape: char, lookup: Lookup) -> Result<Vec<String>, String> {
    let mut lex = Lex::new(s, escape, lookup, false);
    let mut acc = Acc::default();
    lex.run(&[], &mut acc)?;
    acc.finish();
    Ok(acc.words)
}

/// Substitutes a heredoc body: quotes are text there (a file's `"` stays),
/// only variables and the escape before `$` or itself are processed.
pub(super) fn heredoc(s: &str, escape: char, lookup: Lookup) -> Result<String, String> {
    let mut lex = Lex::new(s, escape, lookup, true);
    let mut acc = Acc::default();
    lex.run(&[], &mut acc)?;
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

    /// Processes until one of `stops` (consumed) or the end. Returns the
    /// stop found, so `${…}` can tell a missing `}` and where a pattern
    /// ends.
    fn run(&mut self, stops: &[char], acc: &mut Acc) -> Result<Option<char>, String> {
        while let Some(c) = self.next() {
            if stops.contains(&c) {
                return Ok(Some(c));
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
        Ok(None)
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
        let c = self.next().ok_or(MISSING_BRACE)?;
        match c {
            '}' => Ok(value.unwrap_or_default()),
            '#' | '%' => self.trim_pattern(c, value.unwrap_or_default()),
            '/' => self.replace_pattern(value.unwrap_or_default()),
            ':' => {
                let op = self.next().ok_or(MISSING_BRACE)?;
                self.default_or_alt(&name, op, value, true)
            }
            op => self.default_or_alt(&name, op, value, false),
        }
    }

    /// `${V-w}`, `${V+w}`, `${V?w}` and their `:` forms, where `:` makes an
    /// empty value count as unset.
    fn default_or_alt(
        &mut self,
        name: &str,
        op: char,
        value: Option<String>,
        colon: bool,
    ) -> Result<String, String> {
        if !matches!(op, '-' | '+' | '?') {
            return Err(format!("unsupported modifier ({op}) in substitution"));
        }
        let word = self.modifier_word(&['}'])?.0;
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

    /// `${V#p}`, `${V##p}` (prefix), `${V%p}`, `${V%%p}` (suffix): the
    /// shortest or, doubled, the longest match of the pattern removed.
    fn trim_pattern(&mut self, op: char, value: String) -> Result<String, String> {
        let longest = self.peek() == Some(op);
        self.pos += usize::from(longest);
        let pattern: Vec<char> = self.modifier_word(&['}'])?.0.chars().collect();
        let v: Vec<char> = value.chars().collect();
        // Prefix cuts grow from the start, suffix cuts from the end; the
        // longest match tries them the other way round.
        let mut cuts: Vec<usize> = (0..=v.len()).collect();
        if longest == (op == '#') {
            cuts.reverse();
        }
        for cut in cuts {
            let (hit, rest) = if op == '#' {
                (glob(&pattern, &v[..cut]), &v[cut..])
            } else {
                (glob(&pattern, &v[cut..]), &v[..cut])
            };
            if hit {
                return Ok(rest.iter().collect());
            }
        }
        Ok(value)
    }

    /// `${V/p/r}` (first match) and `${V//p/r}` (every match), the longest
    /// match at each place, as in bash.
    fn replace_pattern(&mut self, value: String) -> Result<String, String> {
        let all = self.peek() == Some('/');
        self.pos += usize::from(all);
        let (pattern, stop) = self.modifier_word(&['/', '}'])?;
        let replacement = match stop {
            '/' => self.modifier_word(&['}'])?.0,
            _ => String::new(),
        };
        let pattern: Vec<char> = pattern.chars().collect();
        if pattern.is_empty() {
            return Ok(value);
        }
        let v: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i < v.len() {
            let end = if replaced && !all {
                None
            } else {
                (i + 1..=v.len()).rev().find(|&j| glob(&pattern, &v[i..j]))
            };
            match end {
                Some(j) => {
                    out.push_str(&replacement);
                    i = j;
                    replaced = true;
                }
                None => {
                    out.push(v[i]);
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// The word after a modifier, up to one of `stops`, itself
    /// substituted; and the stop that ended it.
    fn modifier_word(&mut self, stops: &[char]) -> Result<(String, char), String> {
        let mut acc = Acc::default();
        match self.run(stops, &mut acc)? {
            Some(stop) => Ok((acc.whole, stop)),
            None => Err(MISSING_BRACE.to_string()),
        }
    }
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

/// A shell pattern against a whole string: `*` any run (`/` included: a
/// value is not a path), `?` one character, anything else itself.
fn glob(pattern: &[char], s: &[char]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => (0..=s.len()).any(|n| glob(rest, &s[n..])),
        Some(('?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
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
            w("${A!x}"),
            Err("unsupported modifier (!) in substitution".into())
        );
        assert_eq!(w("${A#x"), Err("syntax error: missing '}'".into()));
        assert_eq!(
            w("${}"),
            Err("bad substitution: missing variable name in ${}".into())
        );
    }

    #[test]
    fn pattern_modifiers_trim_and_replace() {
        let env = |n: &str| (n == "P").then(|| "a/b.tar.gz".to_string());
        let w = |s: &str| word(s, '\\', &env);
        assert_eq!(
            w("${P#*/}|${P##*.}|${P%.*}|${P%%.*}"),
            Ok("b.tar.gz|gz|a/b.tar|a/b".into())
        );
        assert_eq!(w("${P#x}|${U#*}"), Ok("a/b.tar.gz|".into()));
        assert_eq!(
            w("${P/./-}|${P//./-}|${P//?.}|${P/}"),
            Ok("a/b-tar.gz|a/b-tar-gz|a/tagz|a/b.tar.gz".into())
        );
        assert_eq!(w("${P/a*/x}"), Ok("x".into()));
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
