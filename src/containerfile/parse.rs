//! Instructions: from one instruction's text to its typed form. Nothing is
//! substituted here (see `resolve`); what is checked is what does not
//! depend on variables: the keyword, the flags, the number and shape of
//! the arguments.

use std::time::Duration;

use super::ast::*;
use super::flags::{self, Flags, Kind};
use super::lines::{self, Logical};
use super::words::{fields, split_words};
use super::Error;

/// Parses a Containerfile. `file` is the name errors give.
pub fn parse(file: &str, text: &str) -> Result<Containerfile, Error> {
    let (d, logicals) = lines::split(file, text)?;
    let instructions = logicals
        .into_iter()
        .map(|l| located(file, d.escape, l))
        .collect::<Result<_, _>>()?;
    Ok(Containerfile {
        file: file.to_string(),
        escape: d.escape,
        syntax: d.syntax,
        check: d.check,
        instructions,
    })
}

/// Parses an ONBUILD trigger as a base image's config stores it (the
/// text after `ONBUILD`), for a build on that image to run after its
/// FROM. What ONBUILD refuses (`ONBUILD`, `FROM`, `MAINTAINER` as a
/// trigger) is refused here as well, as Docker refuses it when it runs
/// the triggers. The error is the message alone: the caller names the
/// base image and the trigger.
pub fn parse_trigger(text: &str) -> Result<Located, String> {
    let file = parse("ONBUILD", &format!("ONBUILD {text}")).map_err(|e| match e {
        Error::Instruction { message, .. } | Error::Line { message, .. } => message,
        Error::File { message, .. } => message,
    })?;
    match <[Located; 1]>::try_from(file.instructions) {
        Ok(
            [Located {
                instruction: Instruction::Onbuild(t),
                ..
            }],
        ) => Ok(*t),
        _ => Err("not one instruction".to_string()),
    }
}

/// One instruction with its place, or an error naming it and its line.
fn located(file: &str, escape: char, l: Logical) -> Result<Located, Error> {
    let (keyword, rest) = split_keyword(&l.text);
    let instruction =
        instruction(&keyword, rest, escape, &l.heredocs).map_err(|message| Error::Instruction {
            file: file.to_string(),
            line: l.line,
            instruction: keyword.to_ascii_uppercase(),
            message,
        })?;
    Ok(Located {
        line: l.line,
        end_line: l.end_line,
        original: l.original,
        instruction,
    })
}

/// The keyword (lowercased: instructions are case-insensitive) and the
/// arguments after it.
fn split_keyword(text: &str) -> (String, &str) {
    let t = text.trim();
    match t.find(char::is_whitespace) {
        Some(i) => (t[..i].to_ascii_lowercase(), t[i..].trim_start()),
        None => (t.to_ascii_lowercase(), ""),
    }
}

/// Dispatches on the keyword; an unknown one is an error.
fn instruction(
    keyword: &str,
    rest: &str,
    escape: char,
    heredocs: &[(String, Heredoc)],
) -> Result<Instruction, String> {
    let (flag_words, rest) = flags::extract(rest);
    let no_flags = || Flags::check(&flag_words, &[]);
    Ok(match keyword {
        "from" => from(
            Flags::check(&flag_words, &[("platform", Kind::Value)])?,
            rest,
        )?,
        "run" => Instruction::Run(run(&flag_words, rest, heredocs)?),
        "copy" => Instruction::Copy(transfer(&flag_words, rest, heredocs, COPY_FLAGS)?),
        "add" => Instruction::Add(transfer(&flag_words, rest, heredocs, ADD_FLAGS)?),
        "healthcheck" => Instruction::Healthcheck(healthcheck(&flag_words, rest)?),
        "onbuild" => {
            no_flags()?;
            Instruction::Onbuild(Box::new(onbuild(rest, escape, heredocs)?))
        }
        _ => {
            no_flags()?;
            unflagged(keyword, rest, escape)?
        }
    })
}

/// The instructions that take no flags.
fn unflagged(keyword: &str, rest: &str, escape: char) -> Result<Instruction, String> {
    Ok(match keyword {
        "env" => Instruction::Env(name_values(rest, escape, "ENV")?),
        "label" => Instruction::Label(name_values(rest, escape, "LABEL")?),
        "arg" => Instruction::Arg(args(rest, escape)?),
        "workdir" => Instruction::Workdir(one(rest, "WORKDIR")?),
        "user" => Instruction::User(one(rest, "USER")?),
        "stopsignal" => Instruction::StopSignal(one(rest, "STOPSIGNAL")?),
        "maintainer" => Instruction::Maintainer(one(rest, "MAINTAINER")?),
        "entrypoint" => Instruction::Entrypoint(maybe_json(rest)?),
        "cmd" => Instruction::Cmd(maybe_json(rest)?),
        "shell" => Instruction::Shell(shell(rest)?),
        "expose" => Instruction::Expose(at_least_one(fields(rest), "EXPOSE")?),
        "volume" => Instruction::Volume(volume(rest)?),
        _ => return Err("unknown instruction".to_string()),
    })
}

fn at_least_one(v: Vec<String>, keyword: &str) -> Result<Vec<String>, String> {
    if v.is_empty() {
        return Err(format!("{keyword} requires at least one argument"));
    }
    Ok(v)
}

/// The whole rest as one value (WORKDIR, USER, STOPSIGNAL, MAINTAINER take
/// their line as is, spaces included, as Docker does).
fn one(rest: &str, keyword: &str) -> Result<String, String> {
    if rest.is_empty() {
        return Err(format!("{keyword} requires exactly one argument"));
    }
    Ok(rest.to_string())
}

/// `FROM [--platform=p] image [AS name]`.
fn from(flags: Flags, rest: &str) -> Result<Instruction, String> {
    let words = fields(rest);
    let name = match words.as_slice() {
        [_] => None,
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(stage_name(name)?),
        _ => return Err("FROM requires either one or three arguments".to_string()),
    };
    Ok(Instruction::From {
        image: words[0].clone(),
        name,
        platform: flags.value("platform"),
    })
}

/// A stage name, lowercased; BuildKit accepts `[a-z][a-z0-9-_.]*` so a
/// name cannot be mistaken for a stage index or a reference.
fn stage_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !ok {
        return Err(format!(
            "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
        ));
    }
    Ok(lower)
}

/// A command in exec form if it is a JSON array of strings, else in shell
/// form. An array that is not JSON (single quotes, a trailing comma) is a
/// shell command, as in Docker; valid JSON with a non-string in it is an
/// error, also as in Docker.
pub(super) fn maybe_json(rest: &str) -> Result<Command, String> {
    match json_array(rest)? {
        Some(v) => Ok(Command::Exec(v)),
        None => Ok(Command::Shell(rest.to_string())),
    }
}

/// `Some(strings)` when `rest` is a JSON array of strings, `None` when it
/// is not JSON at all.
fn json_array(rest: &str) -> Result<Option<Vec<String>>, String> {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(t) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn shell(rest: &str) -> Result<Vec<String>, String> {
    match json_array(rest)? {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err("SHELL requires at least one argument".to_string()),
        None => Err("SHELL requires the arguments to be in JSON form".to_string()),
    }
}

fn volume(rest: &str) -> Result<Vec<String>, String> {
    let v = at_least_one(json_array(rest)?.unwrap_or_else(|| fields(rest)), "VOLUME")?;
    if v.iter().any(|p| p.trim().is_empty()) {
        return Err("VOLUME specified can not be an empty string".to_string());
    }
    Ok(v)
}

/// `ENV`/`LABEL`: `k=v k2="v 2"`, or the old `k v w` (one pair, the value
/// the rest of the line). Values keep their quotes until substitution.
fn name_values(rest: &str, escape: char, keyword: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        return legacy_pair(rest, keyword);
    }
    words
        .iter()
        .map(|w| {
            let (k, v) = w.split_once('=').ok_or_else(|| {
                format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value")
            })?;
            if k.is_empty() {
                return Err(format!("{keyword} names can not be blank"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `ENV key value with spaces`: the key, then everything after it.
fn legacy_pair(rest: &str, keyword: &str) -> Result<Vec<(String, String)>, String> {
    let t = rest.trim();
    let Some(i) = t.find([' ', '\t', '\u{b}', '\u{c}', '\r']) else {
        return Err(format!("{keyword} must have two arguments"));
    };
    let value = t[i..].trim_start_matches([' ', '\t', '\u{b}', '\u{c}', '\r']);
    Ok(vec![(t[..i].to_string(), value.to_string())])
}

/// `ARG a b=1 c="x y"`.
fn args(rest: &str, escape: char) -> Result<Vec<ArgDecl>, String> {
    let words = at_least_one(split_words(rest, escape), "ARG")?;
    words
        .into_iter()
        .map(|w| {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w, None),
            };
            if name.is_empty() {
                return Err("ARG names can not be blank".to_string());
            }
            Ok(ArgDecl { name, default })
        })
        .collect()
}

/// `ONBUILD INSTRUCTION`: the trigger is parsed now so a bad one fails
/// here, not in whoever builds on the image. Its text, which goes into the
/// image config to be parsed again there, carries its heredoc bodies.
fn onbuild(rest: &str, escape: char, heredocs: &[(String, Heredoc)]) -> Result<Located, String> {
    let (keyword, inner) = split_keyword(rest);
    match keyword.as_str() {
        "" => return Err("ONBUILD requires at least one argument".to_string()),
        "onbuild" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()),
        "from" | "maintainer" => {
            return Err(format!(
                "{} isn't allowed as an ONBUILD trigger",
                keyword.to_ascii_uppercase()
            ))
        }
        _ => {}
    }
    let instruction = instruction(&keyword, inner, escape, heredocs)
        .map_err(|m| format!("{}: {m}", keyword.to_ascii_uppercase()))?;
    let mut original = rest.trim().to_string();
    for (_, h) in heredocs {
        original.push('\n');
        original.push_str(&h.content);
        original.push_str(&h.name);
    }
    Ok(Located {
        line: 0,
        end_line: 0,
        original,
        instruction,
    })
}

const RUN_FLAGS: &[(&str, Kind)] = &[("mount", Kind::Many), ("network", Kind::Value)];

/// `RUN [--mount=…]… [--network=…] command`.
fn run(flag_words: &[String], rest: &str, heredocs: &[(String, Heredoc)]) -> Result<Run, String> {
    let flags = Flags::check(flag_words, RUN_FLAGS)?;
    if rest.is_empty() {
        return Err("RUN requires at least one argument".to_string());
    }
    let command = maybe_json(rest)?;
    let heredocs = match command {
        Command::Shell(_) => heredocs.iter().map(|(_, h)| h.clone()).collect(),
        Command::Exec(_) => Vec::new(),
    };
    let mounts = flags
        .values("mount")
        .iter()
        .map(|m| mount(m))
        .collect::<Result<_, _>>()?;
    Ok(Run {
        command,
        heredocs,
        mounts,
        network: flags.value("network").map(|n| network(&n)).transpose()?,
    })
}

fn network(n: &str) -> Result<Network, String> {
    match n {
        "default" => Ok(Network::Default),
        "none" => Ok(Network::None),
        "host" => Ok(Network::Host),
        _ => Err(format!("unsupported network mode {n:?}")),
    }
}

/// One `--mount=` value: comma-separated `key=value` fields (CSV, so a
/// field may be quoted).
pub(super) fn mount(spec: &str) -> Result<Mount, String> {
    let mut m = Mount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: true,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let mut readonly = None;
    for field in csv_fields(spec) {
        mount_field(&mut m, &mut readonly, &field)?;
    }
    m.readonly = readonly.unwrap_or(!matches!(m.kind, MountKind::Cache | MountKind::Tmpfs));
    check_mount(&m)?;
    Ok(m)
}

/// Applies one `key[=value]` field of a mount.
fn mount_field(m: &mut Mount, readonly: &mut Option<bool>, field: &str) -> Result<(), String> {
    let (key, value) = match field.split_once('=') {
        Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
        None => (field.trim().to_ascii_lowercase(), None),
    };
    let flag = |v: &Option<String>| -> Result<bool, String> {
        match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(format!("invalid value for {key}: {other:?}")),
        }
    };
    let text = || {
        value
            .clone()
            .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
    };
    match key.as_str() {
        "type" => m.kind = mount_kind(&text()?)?,
        "target" | "dst" | "destination" => m.target = Some(text()?),
        "source" | "src" => m.source = Some(text()?),
        "from" => m.from = Some(text()?),
        "readonly" | "ro" => *readonly = Some(flag(&value)?),
        "rw" | "readwrite" => *readonly = Some(!flag(&value)?),
        "id" => m.id = Some(text()?),
        "sharing" => m.sharing = Some(text()?),
        "mode" => m.mode = Some(text()?),
        "uid" => m.uid = Some(text()?),
        "gid" => m.gid = Some(text()?),
        "required" => m.required = flag(&value)?,
        "size" => m.size = Some(text()?),
        "env" => m.env = Some(text()?),
        _ => return Err(format!("unexpected key '{key}' in '{field}'")),
    }
    Ok(())
}

fn mount_kind(t: &str) -> Result<MountKind, String> {
    Ok(match t {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        _ => return Err(format!("unsupported mount type {t:?}")),
    })
}

/// What BuildKit refuses in a mount regardless of variables.
fn check_mount(m: &Mount) -> Result<(), String> {
    let needs_target = !matches!(m.kind, MountKind::Secret | MountKind::Ssh);
    if needs_target && m.target.as_deref().is_none_or(str::is_empty) {
        return Err(format!("{:?} mount needs a target", m.kind).to_lowercase());
    }
    if m.sharing.is_some() && m.kind != MountKind::Cache {
        return Err("sharing= is only for cache mounts".to_string());
    }
    if let Some(s) = &m.sharing {
        if !["shared", "private", "locked"].contains(&s.as_str()) && !s.contains('$') {
            return Err(format!("unsupported sharing value {s:?}"));
        }
    }
    if m.from.is_some() && !matches!(m.kind, MountKind::Bind | MountKind::Cache) {
        return Err(format!("from= is not allowed on a {:?} mount", m.kind).to_lowercase());
    }
    Ok(())
}

/// Splits CSV fields: `,` separates, `"…"` quotes (with `""` for a quote).
fn csv_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|f| !f.is_empty());
    out
}

const COPY_FLAGS: &[(&str, Kind)] = &[
    ("from", Kind::Value),
    ("chown", Kind::Value),
    ("chmod", Kind::Value),
    ("link", Kind::Bool),
    ("parents", Kind::Bool),
    ("exclude", Kind::Many),
];

const ADD_FLAGS: &[(&str, Kind)] = &[
    ("chown", Kind::Value),
    ("chmod", Kind::Value),
    ("link", Kind::Bool),
    ("exclude", Kind::Many),
    ("checksum", Kind::Value),
    ("keep-git-dir", Kind::Bool),
];

/// `COPY`/`ADD [flags] src… dest`, JSON or words; a source that opens a
/// heredoc becomes that heredoc.
fn transfer(
    flag_words: &[String],
    rest: &str,
    heredocs: &[(String, Heredoc)],
    known: &[(&str, Kind)],
) -> Result<Transfer, String> {
    let flags = Flags::check(flag_words, known)?;
    let json = json_array(rest)?;
    let is_json = json.is_some();
    let mut words = json.unwrap_or_else(|| fields(rest));
    let Some(dest) = words.pop() else {
        return Err("requires at least two arguments".to_string());
    };
    if words.is_empty() {
        return Err(
            "requires at least two arguments, but only one was provided. Destination could not be determined."
                .to_string(),
        );
    }
    let mut docs = heredocs.iter().filter(|_| !is_json).peekable();
    let sources = words
        .into_iter()
        .map(|w| match docs.next_if(|(word, _)| *word == w) {
            Some((_, doc)) => Source::Heredoc(doc.clone()),
            None => Source::Path(w),
        })
        .collect();
    Ok(Transfer {
        sources,
        dest,
        from: flags.value("from"),
        chown: flags.value("chown"),
        chmod: flags.value("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.values("exclude"),
        checksum: flags.value("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
    })
}

const HEALTHCHECK_FLAGS: &[(&str, Kind)] = &[
    ("interval", Kind::Value),
    ("timeout", Kind::Value),
    ("start-period", Kind::Value),
    ("start-interval", Kind::Value),
    ("retries", Kind::Value),
];

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
fn healthcheck(flag_words: &[String], rest: &str) -> Result<Healthcheck, String> {
    let flags = Flags::check(flag_words, HEALTHCHECK_FLAGS)?;
    let (kind, command) = split_keyword(rest);
    match kind.as_str() {
        "none" if !command.is_empty() => Err("HEALTHCHECK NONE takes no arguments".to_string()),
        "none" if !flags.is_empty() => Err("HEALTHCHECK NONE takes no options".to_string()),
        "none" => Ok(Healthcheck::None),
        "cmd" if command.is_empty() => Err("Missing command after HEALTHCHECK CMD".to_string()),
        "cmd" => Ok(Healthcheck::Cmd(HealthcheckCmd {
            command: maybe_json(command)?,
            interval: check_duration(&flags, "interval")?,
            timeout: check_duration(&flags, "timeout")?,
            start_period: check_duration(&flags, "start-period")?,
            start_interval: check_duration(&flags, "start-interval")?,
            retries: flags
                .value("retries")
                .map(|r| {
                    r.parse::<u32>()
                        .map_err(|_| format!("--retries: invalid count {r:?}"))
                })
                .transpose()?,
        })),
        _ => Err(format!(
            "Unknown type {:?} in HEALTHCHECK (try CMD)",
            kind.to_ascii_uppercase()
        )),
    }
}

/// A healthcheck duration flag; Docker refuses one below a millisecond
/// (other than 0, which means "inherit").
fn check_duration(flags: &Flags, name: &str) -> Result<Option<Duration>, String> {
    let Some(v) = flags.value(name) else {
        return Ok(None);
    };
    let d = go_duration(&v).map_err(|m| format!("--{name}: {m}"))?;
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(format!("--{name}: {v} cannot be less than 1ms"));
    }
    Ok(Some(d))
}

/// Parses a duration as Go's `time.ParseDuration` writes them (`30s`,
/// `1m30s`, `1.5h`, `250ms`): Docker users write them that way.
pub(super) fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let number: f64 = rest[..n].parse().map_err(|_| bad())?;
        let after = &rest[n..];
        let u = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let scale = match &after[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += number * scale;
        rest = &after[u..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            go_duration("5"),
            Err("missing unit in duration \"5\"".into())
        );
        assert_eq!(
            go_duration("5d"),
            Err("unknown unit \"d\" in duration \"5d\"".into())
        );
        assert!(go_duration("-1s").is_err());
        assert!(go_duration("").is_err());
    }

    #[test]
    fn csv_fields_honour_quotes() {
        assert_eq!(
            csv_fields("type=bind,\"source=a,b\",,target=\"\"x\"\""),
            ["type=bind", "source=a,b", "target=x"]
        );
    }
}
