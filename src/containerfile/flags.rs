//! Instruction flags (`--mount=…`, `--from=…`, `--link`): taken off the
//! front of the arguments and checked against what each instruction
//! accepts, so a flag shipyard does not know is an error rather than a
//! silently different build.

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    Value,
    /// `--mount=x`, any number of times.
    Many,
}

/// The flags an instruction was given, in order.
#[derive(Debug, Default)]
pub(super) struct Flags {
    given: Vec<(String, Option<String>)>,
}

/// Takes the leading `--name[=value]` words off `rest`. Quotes in a flag
/// are removed and `\` escapes the next character, as BuildKit reads them;
/// the first word not starting with `--` ends the flags, and so does `--`
/// alone. Returns the flags and what follows them.
pub(super) fn extract(rest: &str) -> (Vec<String>, &str) {
    let mut words = Vec::new();
    let mut s = rest.trim_start();
    while s.starts_with("--") {
        let (word, after) = one_word(s);
        s = after.trim_start();
        if word == "--" {
            break;
        }
        words.push(word);
    }
    (words, s)
}

/// One whitespace-delimited word from the start of `s`, with quotes
/// removed, and what follows it.
fn one_word(s: &str) -> (String, &str) {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut iter = s.char_indices();
    while let Some((i, c)) = iter.next() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => return (word, &s[i..]),
            _ if c == '\\' && quote != Some('\'') => {
                if let Some((_, n)) = iter.next() {
                    word.push(n);
                }
            }
            _ => word.push(c),
        }
    }
    (word, "")
}

impl Flags {
    /// Checks `words` (from [`extract`]) against `known`: an unknown
    /// flag, a value missing or given to a flag that takes none, and a
    /// repeated single flag are errors.
    pub(super) fn check(words: &[String], known: &[(&str, Kind)]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for w in words {
            let body = &w[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some((_, kind)) = known.iter().find(|(k, _)| *k == name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            match (kind, &value) {
                (Kind::Value | Kind::Many, None) => {
                    return Err(format!("missing a value on flag: --{name}"))
                }
                (Kind::Bool, Some(v)) if v != "true" && v != "false" => {
                    return Err(format!(
                        "expecting boolean value for flag --{name}, not: {v}"
                    ))
                }
                _ => {}
            }
            if *kind != Kind::Many && flags.given.iter().any(|(n, _)| n == name) {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            flags.given.push((name.to_string(), value));
        }
        Ok(flags)
    }

    /// The value of a single-valued flag.
    pub(super) fn value(&self, name: &str) -> Option<String> {
        self.given
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }

    /// Every value of a repeatable flag, in order.
    pub(super) fn values(&self, name: &str) -> Vec<String> {
        self.given
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean flag: given alone or `=true`.
    pub(super) fn bool(&self, name: &str) -> bool {
        self.given
            .iter()
            .any(|(n, v)| n == name && v.as_deref() != Some("false"))
    }

    /// Whether any flag was given (HEALTHCHECK NONE takes none).
    pub(super) fn is_empty(&self) -> bool {
        self.given.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_off_the_front_with_quotes_removed() {
        let (w, rest) = extract("--a=1  --b=\"x y\" --c src --d dst");
        assert_eq!(w, ["--a=1", "--b=x y", "--c"]);
        assert_eq!(rest, "src --d dst");
        let (w, rest) = extract("-- --x");
        assert!(w.is_empty());
        assert_eq!(rest, "--x");
    }

    #[test]
    fn unknown_missing_and_duplicate_flags_are_refused() {
        let known = [
            ("from", Kind::Value),
            ("link", Kind::Bool),
            ("m", Kind::Many),
        ];
        let words = |s: &str| extract(s).0;
        let e = |s: &str| Flags::check(&words(s), &known).unwrap_err();
        assert_eq!(e("--nope=1"), "unknown flag: --nope");
        assert_eq!(e("--from"), "missing a value on flag: --from");
        assert_eq!(e("--from=a --from=b"), "duplicate flag specified: --from");
        assert_eq!(
            e("--link=yes"),
            "expecting boolean value for flag --link, not: yes"
        );
        let f = Flags::check(&words("--m=1 --m=2 --link=false"), &known).unwrap();
        assert_eq!(f.values("m"), ["1", "2"]);
        assert!(!f.bool("link"));
    }
}
