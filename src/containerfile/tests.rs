//! The parser's edge cases as a table (input → instructions with their
//! lines, or the error), resolution (ARG scoping, substitution, the stages
//! a target needs), and properties: no input makes the parser panic, and
//! continuations and escapes round-trip.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn sh(s: &str) -> Command {
    Command::Shell(s.to_string())
}

fn exec(v: &[&str]) -> Command {
    Command::Exec(v.iter().map(|s| s.to_string()).collect())
}

fn run(command: Command) -> Instruction {
    Instruction::Run(Run {
        command,
        heredocs: vec![],
        mounts: vec![],
        network: None,
    })
}

fn from(image: &str) -> Instruction {
    Instruction::From {
        image: image.into(),
        name: None,
        platform: None,
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn paths(srcs: &[&str], dest: &str) -> Transfer {
    Transfer {
        sources: srcs.iter().map(|s| Source::Path(s.to_string())).collect(),
        dest: dest.into(),
        ..Transfer::default()
    }
}

fn doc(name: &str, content: &str, expand: bool, chomp: bool) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand,
        chomp,
        fd: None,
    }
}

fn mount(kind: MountKind, target: &str) -> Mount {
    Mount {
        kind,
        target: Some(target.into()),
        source: None,
        from: None,
        readonly: matches!(kind, MountKind::Bind | MountKind::Secret | MountKind::Ssh),
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    }
}

fn health(command: Command) -> HealthcheckCmd {
    HealthcheckCmd {
        command,
        interval: None,
        timeout: None,
        start_period: None,
        start_interval: None,
        retries: None,
    }
}

type Want = Result<Vec<(usize, Instruction)>, &'static str>;

/// Each row: a file, and the instructions with their first lines or the
/// error (which must name the file, the line and the instruction).
fn table() -> Vec<(&'static str, Want)> {
    use Instruction as I;
    vec![
        // Keywords, forms.
        ("RUN echo hi", Ok(vec![(1, run(sh("echo hi")))])),
        ("  run   echo hi  ", Ok(vec![(1, run(sh("echo hi")))])),
        (r#"RUN ["echo", "hi"]"#, Ok(vec![(1, run(exec(&["echo", "hi"])))])),
        // Not JSON: single quotes, a trailing comma → shell form.
        ("RUN ['echo', 'hi']", Ok(vec![(1, run(sh("['echo', 'hi']")))])),
        (r#"RUN ["echo", "hi",]"#, Ok(vec![(1, run(sh(r#"["echo", "hi",]"#)))])),
        (r#"CMD ["a"] x"#, Ok(vec![(1, I::Cmd(sh(r#"["a"] x"#)))])),
        ("CMD []", Ok(vec![(1, I::Cmd(exec(&[])))])),
        (
            "CMD [1, 2]",
            Err("f:1: CMD: when using JSON array syntax, arrays must be comprised of strings only"),
        ),
        ("ENTRYPOINT exec app -v", Ok(vec![(1, I::Entrypoint(sh("exec app -v")))])),
        ("RUN", Err("f:1: RUN: RUN requires at least one argument")),
        ("BOGUS x", Err("f:1: BOGUS: unknown instruction")),
        ("FROM a\n\n# c\nfrobnicate", Err("f:4: FROBNICATE: unknown instruction")),
        // Continuations: comment and empty lines inside are skipped.
        ("RUN a \\\n  b", Ok(vec![(1, run(sh("a   b")))])),
        ("RUN a \\\n# c\n  # d\n b", Ok(vec![(1, run(sh("a  b")))])),
        ("RUN a \\\n\n   \n b\nRUN c", Ok(vec![(1, run(sh("a  b"))), (5, run(sh("c")))])),
        ("RUN a \\  \t\n b", Ok(vec![(1, run(sh("a  b")))])),
        // An escaped escape at the end is a literal one and does not
        // continue (BuildKit's trailing-backslash test).
        (
            "ENV B another\\\\path\nENV C trailing\\\\backslash\\\\\nENV D x\nENV E hello\\\n\\\nworld",
            Ok(vec![
                (1, I::Env(pairs(&[("B", "another\\\\path")]))),
                (2, I::Env(pairs(&[("C", "trailing\\\\backslash\\\\")]))),
                (3, I::Env(pairs(&[("D", "x")]))),
                (4, I::Env(pairs(&[("E", "helloworld")]))),
            ]),
        ),
        ("RUN a \\\\\\\n b", Ok(vec![(1, run(sh("a \\\\ b")))])),
        ("FROM a\r\nRUN b \\\r\n c\r\n", Ok(vec![(1, from("a")), (2, run(sh("b  c")))])),
        // Directives.
        (
            "# escape=`\nRUN a `\n b\nRUN c \\",
            Ok(vec![(2, run(sh("a  b"))), (4, run(sh("c \\")))]),
        ),
        (
            "\u{feff}# escape=`\nRUN a `\n b",
            Ok(vec![(2, run(sh("a  b")))]),
        ),
        (
            "# a comment\n# escape=`\nRUN a `\nRUN b",
            Ok(vec![(3, run(sh("a `"))), (4, run(sh("b")))]),
        ),
        (
            "FROM a\n# escape=`\nRUN a `\nRUN b",
            Ok(vec![(1, from("a")), (3, run(sh("a `"))), (4, run(sh("b")))]),
        ),
        (
            "# escape=`\n# escape=\\",
            Err("f:2: only one escape parser directive can be used"),
        ),
        ("# escape=x", Err("f:1: invalid escape token 'x' does not match ` or \\")),
        // ENV and LABEL: both forms; values keep quotes until resolution.
        ("ENV k v  w", Ok(vec![(1, I::Env(pairs(&[("k", "v  w")])))])),
        (
            r#"ENV k=v k2="v 2" k3=a\ b"#,
            Ok(vec![(1, I::Env(pairs(&[("k", "v"), ("k2", r#""v 2""#), ("k3", r"a\ b")])))]),
        ),
        (
            r#"ENV a="x\" y" b="#,
            Ok(vec![(1, I::Env(pairs(&[("a", r#""x\" y""#), ("b", "")])))]),
        ),
        ("ENV k", Err("f:1: ENV: ENV must have two arguments")),
        (
            "ENV a=1 b",
            Err("f:1: ENV: Syntax error - can't find = in \"b\". Must be of the form: name=value"),
        ),
        ("ENV =x", Err("f:1: ENV: ENV names can not be blank")),
        ("ENV", Err("f:1: ENV: ENV requires at least one argument")),
        (
            r#"LABEL a=b "c d"=e"#,
            Ok(vec![(1, I::Label(pairs(&[("a", "b"), (r#""c d""#, "e")])))]),
        ),
        ("LABEL old style", Ok(vec![(1, I::Label(pairs(&[("old", "style")])))])),
        // ARG.
        (
            r#"ARG a b=1 c="x y""#,
            Ok(vec![(
                1,
                I::Arg(vec![
                    ArgDecl { name: "a".into(), default: None },
                    ArgDecl { name: "b".into(), default: Some("1".into()) },
                    ArgDecl { name: "c".into(), default: Some(r#""x y""#.into()) },
                ]),
            )]),
        ),
        ("ARG", Err("f:1: ARG: ARG requires at least one argument")),
        ("ARG =1", Err("f:1: ARG: ARG names can not be blank")),
        // FROM.
        (
            "FROM --platform=linux/amd64 img:1 as Build",
            Ok(vec![(
                1,
                I::From {
                    image: "img:1".into(),
                    name: Some("build".into()),
                    platform: Some("linux/amd64".into()),
                },
            )]),
        ),
        ("FROM a AS", Err("f:1: FROM: FROM requires either one or three arguments")),
        ("FROM a b c", Err("f:1: FROM: FROM requires either one or three arguments")),
        ("FROM", Err("f:1: FROM: FROM requires either one or three arguments")),
        (
            "FROM a AS 1x",
            Err("f:1: FROM: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
        ),
        ("FROM --arch=x a", Err("f:1: FROM: unknown flag: --arch")),
        // COPY and ADD.
        (
            "COPY --from=b --chown=1:2 --chmod=644 --link a b /d/",
            Ok(vec![(
                1,
                I::Copy(Transfer {
                    from: Some("b".into()),
                    chown: Some("1:2".into()),
                    chmod: Some("644".into()),
                    link: true,
                    ..paths(&["a", "b"], "/d/")
                }),
            )]),
        ),
        (
            "COPY --link=false --parents --exclude=*.md --exclude=x a/b c",
            Ok(vec![(
                1,
                I::Copy(Transfer {
                    parents: true,
                    exclude: vec!["*.md".into(), "x".into()],
                    ..paths(&["a/b"], "c")
                }),
            )]),
        ),
        (r#"COPY ["a b", "/d"]"#, Ok(vec![(1, I::Copy(paths(&["a b"], "/d")))])),
        // The shell form splits on spaces, quotes or not, as Docker does.
        (r#"COPY "a b" /d"#, Ok(vec![(1, I::Copy(paths(&["\"a", "b\""], "/d")))])),
        (
            "COPY a",
            Err("f:1: COPY: requires at least two arguments, but only one was provided. Destination could not be determined."),
        ),
        ("COPY --nope a b", Err("f:1: COPY: unknown flag: --nope")),
        ("COPY --checksum=x a b", Err("f:1: COPY: unknown flag: --checksum")),
        ("ADD --from=x a b", Err("f:1: ADD: unknown flag: --from")),
        ("COPY --from=a --from=b a b", Err("f:1: COPY: duplicate flag specified: --from")),
        (
            "ADD --checksum=sha256:00 --keep-git-dir https://x/y.git /d",
            Ok(vec![(
                1,
                I::Add(Transfer {
                    checksum: Some("sha256:00".into()),
                    keep_git_dir: true,
                    ..paths(&["https://x/y.git"], "/d")
                }),
            )]),
        ),
        // RUN flags.
        (
            "RUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked pip install x",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("pip install x"),
                    heredocs: vec![],
                    mounts: vec![Mount {
                        id: Some("pip".into()),
                        sharing: Some("locked".into()),
                        ..mount(MountKind::Cache, "/root/.cache")
                    }],
                    network: None,
                }),
            )]),
        ),
        (
            "RUN --mount=type=secret,id=tok,required=true --mount=type=bind,from=build,source=/out,target=/in,rw --network=none ls",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("ls"),
                    heredocs: vec![],
                    mounts: vec![
                        Mount {
                            target: None,
                            id: Some("tok".into()),
                            required: true,
                            ..mount(MountKind::Secret, "")
                        },
                        Mount {
                            from: Some("build".into()),
                            source: Some("/out".into()),
                            readonly: false,
                            ..mount(MountKind::Bind, "/in")
                        },
                    ],
                    network: Some(Network::None),
                }),
            )]),
        ),
        (
            "RUN --mount=type=tmpfs,dst=/t,size=10m --network=host ls",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("ls"),
                    heredocs: vec![],
                    mounts: vec![Mount {
                        size: Some("10m".into()),
                        ..mount(MountKind::Tmpfs, "/t")
                    }],
                    network: Some(Network::Host),
                }),
            )]),
        ),
        ("RUN --mount=type=cache ls", Err("f:1: RUN: cache mount needs a target")),
        (
            "RUN --mount=target=/x,bogus=1 ls",
            Err("f:1: RUN: unexpected key 'bogus' in 'bogus=1'"),
        ),
        ("RUN --mount=type=nfs,target=/x ls", Err("f:1: RUN: unsupported mount type \"nfs\"")),
        (
            "RUN --mount=type=cache,target=/x,sharing=maybe ls",
            Err("f:1: RUN: unsupported sharing value \"maybe\""),
        ),
        (
            "RUN --mount=type=bind,target=/x,sharing=locked ls",
            Err("f:1: RUN: sharing= is only for cache mounts"),
        ),
        ("RUN --network=bridge ls", Err("f:1: RUN: unsupported network mode \"bridge\"")),
        ("RUN --network ls", Err("f:1: RUN: missing a value on flag: --network")),
        ("RUN --security=insecure ls", Err("f:1: RUN: unknown flag: --security")),
        // Heredocs.
        (
            "RUN <<EOF\necho a\n  echo b\nEOF\nRUN x",
            Ok(vec![
                (
                    1,
                    I::Run(Run {
                        command: sh("<<EOF"),
                        heredocs: vec![doc("EOF", "echo a\n  echo b\n", true, false)],
                        mounts: vec![],
                        network: None,
                    }),
                ),
                (5, run(sh("x"))),
            ]),
        ),
        (
            "RUN <<-EOF\n\techo a\n\t\tb\n\tEOF",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("<<-EOF"),
                    heredocs: vec![doc("EOF", "echo a\nb\n", true, true)],
                    mounts: vec![],
                    network: None,
                }),
            )]),
        ),
        (
            "RUN <<'EOF' python3\nprint(\"$x\")\nEOF",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("<<'EOF' python3"),
                    heredocs: vec![doc("EOF", "print(\"$x\")\n", false, false)],
                    mounts: vec![],
                    network: None,
                }),
            )]),
        ),
        (
            "RUN cat <<A >a && cat 3<<\"B\" >b\na\nA\nb\nB\nRUN x",
            Ok(vec![
                (
                    1,
                    I::Run(Run {
                        command: sh("cat <<A >a && cat 3<<\"B\" >b"),
                        heredocs: vec![
                            doc("A", "a\n", true, false),
                            Heredoc {
                                fd: Some(3),
                                ..doc("B", "b\n", false, false)
                            },
                        ],
                        mounts: vec![],
                        network: None,
                    }),
                ),
                (6, run(sh("x"))),
            ]),
        ),
        (
            "COPY <<A a.txt <<B /d/\nx\nA\ny\nB",
            Ok(vec![(
                1,
                I::Copy(Transfer {
                    sources: vec![
                        Source::Heredoc(doc("A", "x\n", true, false)),
                        Source::Path("a.txt".into()),
                        Source::Heredoc(doc("B", "y\n", true, false)),
                    ],
                    dest: "/d/".into(),
                    ..Transfer::default()
                }),
            )]),
        ),
        (
            "RUN <<EMPTY\nEMPTY",
            Ok(vec![(
                1,
                I::Run(Run {
                    command: sh("<<EMPTY"),
                    heredocs: vec![doc("EMPTY", "", true, false)],
                    mounts: vec![],
                    network: None,
                }),
            )]),
        ),
        // Exec form, a quoted opener and other instructions open no heredoc.
        ("RUN \"<<NOHEREDOC\"", Ok(vec![(1, run(sh("\"<<NOHEREDOC\"")))])),
        (r#"RUN ["<<EOF"]"#, Ok(vec![(1, run(exec(&["<<EOF"])))])),
        ("USER <<EOF\nRUN x", Ok(vec![(1, I::User("<<EOF".into())), (2, run(sh("x")))])),
        ("RUN <<EOF\nno end", Err("f:1: unterminated heredoc \"EOF\"")),
        // The rest.
        (
            r#"SHELL ["/bin/bash", "-c"]"#,
            Ok(vec![(1, I::Shell(vec!["/bin/bash".into(), "-c".into()]))]),
        ),
        ("SHELL /bin/bash -c", Err("f:1: SHELL: SHELL requires the arguments to be in JSON form")),
        ("EXPOSE 80 443/tcp", Ok(vec![(1, I::Expose(vec!["80".into(), "443/tcp".into()]))])),
        ("EXPOSE", Err("f:1: EXPOSE: EXPOSE requires at least one argument")),
        (r#"VOLUME ["/a", "/b c"]"#, Ok(vec![(1, I::Volume(vec!["/a".into(), "/b c".into()]))])),
        ("VOLUME /a /b", Ok(vec![(1, I::Volume(vec!["/a".into(), "/b".into()]))])),
        (r#"VOLUME [""]"#, Err("f:1: VOLUME: VOLUME specified can not be an empty string")),
        ("STOPSIGNAL SIGTERM", Ok(vec![(1, I::StopSignal("SIGTERM".into()))])),
        ("WORKDIR /a b", Ok(vec![(1, I::Workdir("/a b".into()))])),
        ("WORKDIR", Err("f:1: WORKDIR: WORKDIR requires exactly one argument")),
        ("USER --x=1 me", Err("f:1: USER: unknown flag: --x")),
        ("MAINTAINER Jane <j@x.org>", Ok(vec![(1, I::Maintainer("Jane <j@x.org>".into()))])),
        ("HEALTHCHECK NONE", Ok(vec![(1, I::Healthcheck(Healthcheck::None))])),
        (
            r#"HEALTHCHECK --interval=5s --timeout=1m30s --start-period=0 --start-interval=2s --retries=3 CMD ["curl", "-f", "x"]"#,
            Ok(vec![(
                1,
                I::Healthcheck(Healthcheck::Cmd(HealthcheckCmd {
                    interval: Some(Duration::from_secs(5)),
                    timeout: Some(Duration::from_secs(90)),
                    start_period: Some(Duration::ZERO),
                    start_interval: Some(Duration::from_secs(2)),
                    retries: Some(3),
                    ..health(exec(&["curl", "-f", "x"]))
                })),
            )]),
        ),
        ("healthcheck cmd curl x", Ok(vec![(1, I::Healthcheck(Healthcheck::Cmd(health(sh("curl x")))))])),
        ("HEALTHCHECK NONE x", Err("f:1: HEALTHCHECK: HEALTHCHECK NONE takes no arguments")),
        ("HEALTHCHECK --retries=1 NONE", Err("f:1: HEALTHCHECK: HEALTHCHECK NONE takes no options")),
        ("HEALTHCHECK CMD", Err("f:1: HEALTHCHECK: Missing command after HEALTHCHECK CMD")),
        ("HEALTHCHECK PING x", Err("f:1: HEALTHCHECK: Unknown type \"PING\" in HEALTHCHECK (try CMD)")),
        ("HEALTHCHECK --interval=5 CMD x", Err("f:1: HEALTHCHECK: --interval: missing unit in duration \"5\"")),
        ("HEALTHCHECK --timeout=10us CMD x", Err("f:1: HEALTHCHECK: --timeout: 10us cannot be less than 1ms")),
        ("HEALTHCHECK --retries=-1 CMD x", Err("f:1: HEALTHCHECK: --retries: invalid count \"-1\"")),
        ("HEALTHCHECK --period=1s CMD x", Err("f:1: HEALTHCHECK: unknown flag: --period")),
        (
            "ONBUILD RUN make \\\n  all",
            Ok(vec![(
                1,
                I::Onbuild(Box::new(Located {
                    line: 0,
                    end_line: 0,
                    original: "RUN make   all".into(),
                    instruction: run(sh("make   all")),
                })),
            )]),
        ),
        (
            "ONBUILD COPY <<EOF /x\nhi\nEOF\nRUN y",
            Ok(vec![
                (
                    1,
                    I::Onbuild(Box::new(Located {
                        line: 0,
                        end_line: 0,
                        original: "COPY <<EOF /x\nhi\nEOF".into(),
                        instruction: I::Copy(Transfer {
                            sources: vec![Source::Heredoc(doc("EOF", "hi\n", true, false))],
                            dest: "/x".into(),
                            ..Transfer::default()
                        }),
                    })),
                ),
                (4, run(sh("y"))),
            ]),
        ),
        ("ONBUILD ONBUILD RUN x", Err("f:1: ONBUILD: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        ("ONBUILD FROM x", Err("f:1: ONBUILD: FROM isn't allowed as an ONBUILD trigger")),
        ("ONBUILD MAINTAINER x", Err("f:1: ONBUILD: MAINTAINER isn't allowed as an ONBUILD trigger")),
        ("ONBUILD BOGUS x", Err("f:1: ONBUILD: BOGUS: unknown instruction")),
        ("ONBUILD COPY --nope a b", Err("f:1: ONBUILD: COPY: unknown flag: --nope")),
        ("ONBUILD", Err("f:1: ONBUILD: ONBUILD requires at least one argument")),
    ]
}

#[test]
fn the_edge_case_table() {
    let mut failures = Vec::new();
    for (input, want) in table() {
        let got = parse("f", input)
            .map(|cf| {
                cf.instructions
                    .into_iter()
                    .map(|l| (l.line, l.instruction))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        let want = want.map_err(str::to_string);
        if got != want {
            failures.push(format!("{input:?}\n   got {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn instructions_keep_their_lines_and_original_text() {
    let cf = parse(
        "f",
        "# syntax=docker/dockerfile:1\nFROM a\n\nRUN x \\\n  # c\n  y\nCOPY <<EOF /d\nhi\nEOF\n",
    )
    .unwrap();
    assert_eq!(cf.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(cf.escape, '\\');
    let spans: Vec<_> = cf
        .instructions
        .iter()
        .map(|l| (l.line, l.end_line, l.original.as_str()))
        .collect();
    assert_eq!(
        spans,
        [
            (2, 2, "FROM a"),
            (4, 6, "RUN x \\\n  # c\n  y"),
            (7, 9, "COPY <<EOF /d\nhi\nEOF"),
        ]
    );
    assert_eq!(parse("f", "").unwrap().instructions, []);
}

#[test]
fn errors_report_their_line() {
    let e = parse("Containerfile", "FROM a\nRUN ok\nCOPY --nope a b\n").unwrap_err();
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.to_string(), "Containerfile:3: COPY: unknown flag: --nope");
}

/// The RUN of a one-instruction file.
fn run_of(text: &str) -> Run {
    match parse("f", text).unwrap().instructions.remove(0).instruction {
        Instruction::Run(r) => r,
        other => panic!("not RUN: {other:?}"),
    }
}

#[test]
fn run_heredocs_become_what_buildkit_runs() {
    assert_eq!(
        run_of("RUN [\"a\", \"b\"]").invocation(),
        Invocation::Exec(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        run_of("RUN a b").invocation(),
        Invocation::Shell("a b".into())
    );
    // A lone heredoc: its body is the command, or a script with a shebang.
    assert_eq!(
        run_of("RUN <<EOF\necho $HOME\nEOF").invocation(),
        Invocation::Shell("echo $HOME\n".into())
    );
    assert_eq!(
        run_of("RUN <<-'py'\n\t#!/usr/bin/python3\n\tprint(1)\n\tpy").invocation(),
        Invocation::Script {
            name: "py".into(),
            content: "#!/usr/bin/python3\nprint(1)\n".into()
        }
    );
    // Anything else: the shell reads the bodies after the command line.
    assert_eq!(
        run_of("RUN cat <<A > a && cat <<B\n1\nA\n2\nB").invocation(),
        Invocation::Shell("cat <<A > a && cat <<B\n1\nA\n2\nB".into())
    );
    assert_eq!(
        run_of("RUN <<EOF bash\nset -e\nEOF").invocation(),
        Invocation::Shell("<<EOF bash\nset -e\nEOF".into())
    );
}

#[test]
fn mounts_default_their_id_and_target_as_buildkit_does() {
    let m = |spec: &str| {
        let Instruction::Run(r) = parse("f", &format!("RUN --mount={spec} x"))
            .unwrap()
            .instructions[0]
            .instruction
            .clone()
        else {
            panic!("not RUN")
        };
        let m = &r.mounts[0];
        (m.effective_id(), m.effective_target())
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(m("type=secret,id=tok"), (s("tok"), s("/run/secrets/tok")));
    assert_eq!(
        m("type=secret,target=/etc/tok.txt"),
        (s("tok.txt"), s("/etc/tok.txt"))
    );
    assert_eq!(
        m("type=cache,target=/root/.cache"),
        (s("/root/.cache"), s("/root/.cache"))
    );
    assert_eq!(m("type=cache,id=x,target=/c"), (s("x"), s("/c")));
    assert_eq!(m("type=bind,target=/b"), (None, s("/b")));
}

// ---- resolution ----

fn resolved(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<Resolved, String> {
    let cf = parse("f", text).map_err(|e| e.to_string())?;
    let opts = ResolveOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        ..ResolveOptions::default()
    };
    resolve(&cf, &opts).map_err(|e| e.to_string())
}

/// The WORKDIR values of the target stage: a compact way to see what a
/// substitution produced.
fn workdirs(text: &str, args: &[(&str, &str)]) -> Vec<String> {
    let r = resolved(text, args, None).unwrap();
    r.stages[r.target]
        .steps
        .iter()
        .filter_map(|s| match &s.instruction {
            Instruction::Workdir(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn global_args_reach_from_lines_only_unless_redeclared() {
    let text = "ARG V=1\nARG W=${V}0\nFROM img:$W\nWORKDIR /a$V\nARG V\nWORKDIR /b$V\n";
    let r = resolved(text, &[], None).unwrap();
    assert_eq!(r.stages[0].base, Base::Image("img:10".into()));
    assert_eq!(workdirs(text, &[]), ["/a", "/b1"]);
    // A build argument overrides the global default, in FROM and after
    // the redeclaration.
    let r = resolved(text, &[("V", "7")], None).unwrap();
    assert_eq!(r.stages[0].base, Base::Image("img:70".into()));
    assert_eq!(workdirs(text, &[("V", "7")]), ["/a", "/b7"]);
}

#[test]
fn stage_args_take_build_args_then_defaults() {
    let text = "FROM a\nARG A=1\nARG B=${A}2 C\nWORKDIR /$A/$B/$C\n";
    assert_eq!(workdirs(text, &[]), ["/1/12/"]);
    assert_eq!(workdirs(text, &[("A", "x"), ("C", "z")]), ["/x/x2/z"]);
    let r = resolved(text, &[("A", "x"), ("UNUSED", "u")], None).unwrap();
    assert_eq!(r.unused_build_args, ["UNUSED"]);
    // Arguments do not cross into the next stage.
    let text = "FROM a\nARG A=1\nFROM b\nWORKDIR /$A\n";
    assert_eq!(workdirs(text, &[("A", "x")]), ["/"]);
}

#[test]
fn env_wins_over_arg_and_uses_values_from_before_its_line() {
    let text = "FROM a\nARG X=arg\nENV X=env\nWORKDIR /$X\nARG X=again\nWORKDIR /$X\n";
    assert_eq!(workdirs(text, &[]), ["/env", "/env"]);
    let r = resolved("FROM a\nENV a=0\nENV a=1 b=$a\n", &[], None).unwrap();
    assert_eq!(
        r.stages[0].steps[1].instruction,
        Instruction::Env(pairs(&[("a", "1"), ("b", "0")]))
    );
}

#[test]
fn quotes_and_escapes_in_env_and_label_values() {
    let text = "FROM a\nENV c=C\nENV a=\"x y\" b='$c' d=\\$c e=\"$c\\$\" f=${c:-no}${U:-yes}\nLABEL \"k $c\"=v\n";
    let r = resolved(text, &[], None).unwrap();
    let steps = &r.stages[0].steps;
    assert_eq!(
        steps[1].instruction,
        Instruction::Env(pairs(&[
            ("a", "x y"),
            ("b", "$c"),
            ("d", "$c"),
            ("e", "C$"),
            ("f", "Cyes")
        ]))
    );
    assert_eq!(
        steps[2].instruction,
        Instruction::Label(pairs(&[("k C", "v")]))
    );
    // With the backtick escape, a backslash is an ordinary character.
    let r = resolved("# escape=`\nFROM a\nENV p=C:\\dir q=`$x\n", &[], None).unwrap();
    assert_eq!(
        r.stages[0].steps[0].instruction,
        Instruction::Env(pairs(&[("p", "C:\\dir"), ("q", "$x")]))
    );
}

#[test]
fn run_cmd_and_onbuild_are_not_substituted() {
    let text = "FROM a\nARG X=1\nRUN echo $X\nCMD echo $X\nONBUILD RUN echo $X\n";
    let r = resolved(text, &[], None).unwrap();
    let steps = &r.stages[0].steps;
    assert_eq!(steps[1].instruction, run(sh("echo $X")));
    assert_eq!(steps[1].args, pairs(&[("X", "1")]));
    assert_eq!(steps[2].instruction, Instruction::Cmd(sh("echo $X")));
    let Instruction::Onbuild(t) = &steps[3].instruction else {
        panic!("not ONBUILD")
    };
    assert_eq!(t.original, "RUN echo $X");
}

#[test]
fn copy_values_and_heredocs_are_substituted_unless_quoted() {
    let text =
        "FROM a\nARG D=/dst U=1000\nCOPY --chown=$U:$U src/$U <<A <<'B' $D/\n$U \"q\"\nA\n$U\nB\n";
    let r = resolved(text, &[], None).unwrap();
    let Instruction::Copy(t) = &r.stages[0].steps[1].instruction else {
        panic!("not COPY")
    };
    assert_eq!(t.chown.as_deref(), Some("1000:1000"));
    assert_eq!(t.dest, "/dst/");
    assert_eq!(
        t.sources,
        [
            Source::Path("src/1000".into()),
            Source::Heredoc(doc("A", "1000 \"q\"\n", true, false)),
            Source::Heredoc(doc("B", "$U\n", false, false)),
        ]
    );
}

#[test]
fn expose_and_volume_are_substituted_and_checked() {
    let r = resolved(
        "FROM a\nARG P=\"80 81/udp\"\nEXPOSE $P 90\nVOLUME [\"/v/$P\"]\n",
        &[],
        None,
    )
    .unwrap();
    let steps = &r.stages[0].steps;
    assert_eq!(
        steps[1].instruction,
        Instruction::Expose(vec!["80".into(), "81/udp".into(), "90".into()])
    );
    assert_eq!(
        steps[2].instruction,
        Instruction::Volume(vec!["/v/80 81/udp".into()])
    );
    assert_eq!(
        resolved("FROM a\nEXPOSE 80/xyz\n", &[], None).unwrap_err(),
        "f:2: EXPOSE: invalid port \"80/xyz\": expected PORT[-PORT][/tcp|udp|sctp]"
    );
    assert_eq!(
        resolved("FROM a\nVOLUME $NONE\n", &[], None).unwrap_err(),
        "f:2: VOLUME: VOLUME specified can not be an empty string"
    );
}

const MULTI: &str = "\
FROM golang AS build
RUN make
FROM build AS test
RUN make test
FROM alpine AS assets
RUN fetch
FROM scratch AS tools
FROM alpine
RUN --mount=type=bind,from=tools,target=/t ls
COPY --from=build /out /app
COPY --from=0 /x /x
COPY --from=busybox /bin/sh /sh
";

#[test]
fn the_target_needs_only_its_stages_in_dependency_order() {
    let r = resolved(MULTI, &[], None).unwrap();
    assert_eq!(r.target, 4);
    assert_eq!(r.needed, [0, 3, 4]);
    let last = &r.stages[4];
    assert_eq!(last.depends_on, [0, 3]);
    assert_eq!(last.steps[0].mount_from, [Some(FromRef::Stage(3))]);
    assert_eq!(last.steps[1].copy_from, Some(FromRef::Stage(0)));
    assert_eq!(
        last.steps[3].copy_from,
        Some(FromRef::Image("busybox".into()))
    );
    assert_eq!(r.stages[1].base, Base::Stage(0));
    assert_eq!(r.stages[3].base, Base::Scratch);
    let r = resolved(MULTI, &[], Some("TEST")).unwrap();
    assert_eq!((r.target, r.needed), (1, vec![0, 1]));
    assert_eq!(
        resolved(MULTI, &[], Some("nope")).unwrap_err(),
        "f: target stage \"nope\" could not be found"
    );
}

#[test]
fn a_stage_the_target_does_not_need_may_fail_to_substitute() {
    let text = "FROM a AS test\nRUN t\nFROM a AS release\nLABEL v=${VERSION:?required}\n";
    let r = resolved(text, &[("VERSION", "1")], Some("test")).unwrap();
    assert_eq!(r.needed, [0]);
    // Only what the target needs consumes build arguments.
    let text2 = "ARG G\nFROM a AS test\nFROM a AS release\nARG VERSION\n";
    let r = resolved(text2, &[("VERSION", "1"), ("G", "g")], Some("test")).unwrap();
    assert_eq!(r.unused_build_args, ["VERSION"]);
    let r = resolved(text2, &[("VERSION", "1"), ("G", "g")], None).unwrap();
    assert!(r.unused_build_args.is_empty());
    assert_eq!(
        resolved(text, &[], None).unwrap_err(),
        "f:4: LABEL: VERSION: required"
    );
    // A FROM must resolve in every stage, as BuildKit resolves every base.
    let text = "FROM a AS test\nFROM $NOPE AS release\n";
    assert_eq!(
        resolved(text, &[], Some("test")).unwrap_err(),
        "f:2: FROM: base name ($NOPE) should not be blank"
    );
}

#[test]
fn a_stage_built_on_another_starts_with_its_env() {
    let text = "FROM a AS one\nENV P=/opt\nFROM one\nWORKDIR $P/x\n";
    assert_eq!(workdirs(text, &[]), ["/opt/x"]);
    // And a base image's env, when the caller passes it.
    let cf = parse("f", "FROM img\nWORKDIR $HOME/x\n").unwrap();
    let mut opts = ResolveOptions::default();
    opts.image_env
        .insert("img".into(), pairs(&[("HOME", "/root")]));
    let r = resolve(&cf, &opts).unwrap();
    assert_eq!(
        r.stages[0].steps[0].instruction,
        Instruction::Workdir("/root/x".into())
    );
}

#[test]
fn proxy_and_automatic_args_need_no_declaration_where_docker_says() {
    let text = "ARG TARGETARCH\nFROM img-$TARGETARCH\nWORKDIR /$HTTP_PROXY$TARGETARCH\nARG TARGETARCH\nARG https_proxy\nWORKDIR /$TARGETARCH/$https_proxy\n";
    let cf = parse("f", text).unwrap();
    let opts = ResolveOptions {
        build_args: BTreeMap::from([
            ("HTTP_PROXY".to_string(), "http://p".to_string()),
            ("https_proxy".to_string(), "s".to_string()),
        ]),
        automatic_args: BTreeMap::from([("TARGETARCH".to_string(), "amd64".to_string())]),
        ..ResolveOptions::default()
    };
    let r = resolve(&cf, &opts).unwrap();
    let s = &r.stages[0];
    assert_eq!(s.base, Base::Image("img-amd64".into()));
    assert_eq!(s.steps[0].instruction, Instruction::Workdir("/".into()));
    assert_eq!(
        s.steps[3].instruction,
        Instruction::Workdir("/amd64/s".into())
    );
    assert_eq!(
        s.proxy_args,
        pairs(&[("HTTP_PROXY", "http://p"), ("https_proxy", "s")])
    );
    assert!(r.unused_build_args.is_empty());
}

#[test]
fn mount_values_are_substituted() {
    let text = "FROM a\nARG ID=pip\nRUN --mount=type=cache,id=$ID,target=/c/$ID ls\n";
    let r = resolved(text, &[], None).unwrap();
    let Instruction::Run(run) = &r.stages[0].steps[1].instruction else {
        panic!("not RUN")
    };
    assert_eq!(run.mounts[0].id.as_deref(), Some("pip"));
    assert_eq!(run.mounts[0].target.as_deref(), Some("/c/pip"));
}

#[test]
fn resolution_errors_name_file_line_and_instruction() {
    let cases = [
        (
            "FROM $NOPE\n",
            "f:1: FROM: base name ($NOPE) should not be blank",
        ),
        (
            "RUN x\nFROM a\n",
            "f:1: RUN: no build stage in current context: only ARG may come before the first FROM",
        ),
        ("ARG A=1\n", "f: no build stage: the file has no FROM"),
        (
            "FROM a AS x\nFROM b AS X\n",
            "f:2: FROM: duplicate stage name \"x\"",
        ),
        (
            "FROM a\nWORKDIR ${X:?must be set}\n",
            "f:2: WORKDIR: X: must be set",
        ),
        (
            "FROM a\nUSER \"me\n",
            "f:2: USER: unexpected end of statement while looking for matching double-quote",
        ),
        (
            "FROM a\nCOPY --from=1 a b\n",
            "f:2: COPY: --from=1: no earlier stage has index 1",
        ),
        ("ARG A=${B\nFROM a\n", "f:1: ARG: syntax error: missing '}'"),
    ];
    for (text, want) in cases {
        assert_eq!(resolved(text, &[], None).unwrap_err(), want, "{text:?}");
    }
}

// ---- properties ----

/// Renders words as one RUN instruction, breaking the line after the
/// chosen words with the escape character, and putting a comment or an
/// empty line after some breaks (BuildKit skips both).
fn render_run(words: &[String], breaks: &[u8], escape: char) -> String {
    let mut s = String::new();
    if escape == '`' {
        s.push_str("# escape=`\n");
    }
    s.push_str("RUN");
    for (i, w) in words.iter().enumerate() {
        s.push(' ');
        let brk = breaks.get(i).copied().unwrap_or(0);
        if brk > 0 {
            s.push(escape);
            s.push('\n');
            match brk {
                2 => s.push_str("# a comment\n"),
                3 => s.push('\n'),
                _ => {}
            }
        }
        s.push_str(w);
    }
    s.push('\n');
    s
}

/// Renders a value inside double quotes, escaping what substitution would
/// otherwise take: `"`, `$` and the escape character.
fn quote(value: &str, escape: char) -> String {
    let mut s = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '$' || c == escape {
            s.push(escape);
        }
        s.push(c);
    }
    s.push('"');
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_parser_never_panics(text in "\\PC*") {
        if let Ok(cf) = parse("f", &text) {
            let _ = resolve(&cf, &ResolveOptions::default());
        }
    }

    #[test]
    fn the_parser_never_panics_on_containerfile_like_text(
        text in "((FROM|RUN|COPY|ENV|ARG|ONBUILD|HEALTHCHECK|LABEL|EXPOSE|VOLUME|#|--|[ \t\n\\\\`\"'$={}<\\[\\]:,-]|[a-zA-Z0-9]){0,60})"
    ) {
        if let Ok(cf) = parse("f", &text) {
            let _ = resolve(&cf, &ResolveOptions::default());
        }
    }

    #[test]
    fn continuations_round_trip(
        // A word may not start with '-': `RUN --x` is a flag, not a command.
        words in proptest::collection::vec("[a-z0-9_./][a-z0-9_./-]{0,7}", 1..8),
        breaks in proptest::collection::vec(0u8..4, 8),
        backtick in any::<bool>(),
    ) {
        let escape = if backtick { '`' } else { '\\' };
        let text = render_run(&words, &breaks, escape);
        let cf = parse("f", &text).unwrap();
        prop_assert_eq!(cf.escape, escape);
        prop_assert_eq!(cf.instructions.len(), 1);
        let l = &cf.instructions[0];
        prop_assert_eq!(l.line, if backtick { 2 } else { 1 });
        prop_assert_eq!(l.end_line, text.lines().count());
        prop_assert_eq!(&l.instruction, &run(sh(&words.join(" "))));
    }

    #[test]
    fn quoted_env_values_round_trip(
        values in proptest::collection::vec("[a-z \"'$\\\\`{}]{0,10}", 1..5),
        backtick in any::<bool>(),
    ) {
        let escape = if backtick { '`' } else { '\\' };
        let mut text = String::new();
        if backtick {
            text.push_str("# escape=`\n");
        }
        text.push_str("FROM a\nENV");
        for (i, v) in values.iter().enumerate() {
            text.push_str(&format!(" {escape}\n  k{i}={}", quote(v, escape)));
        }
        text.push('\n');
        let r = resolved(&text, &[], None).unwrap();
        let want: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), v.clone()))
            .collect();
        prop_assert_eq!(&r.stages[0].steps[0].instruction, &Instruction::Env(want));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Heredoc bodies come back as written (less the tabs `<<-` strips),
    /// nothing in them taken for a continuation, comment or instruction,
    /// and the next instruction keeps its line.
    #[test]
    fn heredoc_bodies_round_trip(
        lines in proptest::collection::vec("[a-z0-9 $\"'\\\\#`{}-]{0,12}", 0..6),
        chomp in any::<bool>(),
    ) {
        let indent = if chomp { "\t\t" } else { "" };
        let dash = if chomp { "-" } else { "" };
        let body: String = lines.iter().map(|l| format!("{indent}{l}\n")).collect();
        let text = format!("FROM a\nCOPY <<{dash}'EOF' /f\n{body}{indent}EOF\nRUN next\n");
        let r = resolved(&text, &[], None).unwrap();
        let steps = &r.stages[0].steps;
        let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
        prop_assert_eq!(
            &steps[0].instruction,
            &Instruction::Copy(Transfer {
                sources: vec![Source::Heredoc(doc("EOF", &want, false, chomp))],
                dest: "/f".into(),
                ..Transfer::default()
            })
        );
        prop_assert_eq!(steps[1].line, 4 + lines.len());
    }
}

/// The seed's multi-stage example, as its readers write it.
#[test]
fn the_seed_multi_stage_file_resolves() {
    let text = "\
FROM golang:1.7.3 AS STAGE1
WORKDIR /go/src/github.com/alexellis/href-counter/
RUN go get -d -v golang.org/x/net/html
COPY app.go .
RUN CGO_ENABLED=0 GOOS=linux go build -a -installsuffix cgo -o app .

FROM alpine:latest
RUN apk --no-cache add ca-certificates
WORKDIR /root/
COPY --from=stage1 /go/src/github.com/alexellis/href-counter/app .
CMD [\"./app\"]
";
    let r = resolved(text, &[], None).unwrap();
    assert_eq!((r.target, r.needed.clone()), (1, vec![0, 1]));
    assert_eq!(r.stages[0].name.as_deref(), Some("stage1"));
    assert_eq!(r.stages[0].base, Base::Image("golang:1.7.3".into()));
    let last = &r.stages[1];
    assert_eq!(last.base, Base::Image("alpine:latest".into()));
    let lines: Vec<usize> = last.steps.iter().map(|s| s.line).collect();
    assert_eq!(lines, [8, 9, 10, 11]);
    assert_eq!(last.steps[2].copy_from, Some(FromRef::Stage(0)));
    assert_eq!(
        last.steps[3].instruction,
        Instruction::Cmd(exec(&["./app"]))
    );
}

#[test]
fn triggers_from_a_base_config_parse_as_docker_runs_them() {
    let t = parse_trigger("RUN make \\\n  all").unwrap();
    assert_eq!(t.instruction, run(sh("make   all")));
    assert_eq!(t.original, "RUN make   all");
    let t = parse_trigger("COPY <<EOF /x\nhi\nEOF").unwrap();
    let Instruction::Copy(c) = t.instruction else {
        panic!("not COPY")
    };
    assert_eq!(
        c.sources,
        [Source::Heredoc(doc("EOF", "hi\n", true, false))]
    );
    for (text, want) in [
        ("", "ONBUILD requires at least one argument"),
        (
            "ONBUILD RUN x",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("from x", "FROM isn't allowed as an ONBUILD trigger"),
        (
            "MAINTAINER x",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        ("RUN --nope x", "RUN: unknown flag: --nope"),
        ("BOGUS x", "BOGUS: unknown instruction"),
    ] {
        assert_eq!(parse_trigger(text), Err(want.to_string()), "{text:?}");
    }
}
