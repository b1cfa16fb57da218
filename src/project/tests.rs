use super::*;

fn p(text: &str) -> Result<Plan, SpecError> {
    parse(text, "shipyard.toml", Path::new("."), &[])
}

fn err(text: &str) -> String {
    p(text).unwrap_err().to_string()
}

#[test]
fn unknown_key_names_line_column_and_suggests() {
    let e = err("[builder]\nfrom = \"host\"\n\n[build.a]\nrun = \"true\"\nafer = []\n");
    assert!(e.starts_with("shipyard.toml:6:1: "), "{e}");
    assert!(
        e.contains("unknown key `afer`; did you mean `after`?"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let e = err("[build.a]\nrun = 42\n");
    assert!(e.starts_with("shipyard.toml:2:7: `run`:"), "{e}");
}

#[test]
fn unknown_rule_and_cycle() {
    let e = err("[build.a]\nrun = \"true\"\nafter = [\"build.b\"]\n");
    assert!(
        e.contains("shipyard.toml:3:10:") && e.contains("unknown rule `build.b`"),
        "{e}"
    );
    let e = err("[build.a]\nrun = \"true\"\nafter = [\"build.bb\"]\n[build.b]\nrun = \"true\"\n");
    assert!(e.contains("did you mean `build.b`?"), "{e}");
    let e = err("[build.a]\nrun = \"x\"\nafter = [\"build.c\"]\n[build.b]\nrun = \"x\"\nafter = [\"build.a\"]\n[build.c]\nrun = \"x\"\nafter = [\"build.b\"]\n");
    assert!(
        e.contains("dependency cycle: build.a -> build.c -> build.b -> build.a"),
        "{e}"
    );
}

#[test]
fn missing_source_path() {
    let e = err("[builder]\nsources = { \"/src\" = \"no/such/dir\" }\n");
    assert!(
        e.starts_with("shipyard.toml:2:22:") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn seeds_ordering_is_expressible_and_stable() {
    // base build first, each package's build, its tapeout, base tapeout last.
    let plan = p(r#"
[build.base]
run = "true"
[build.app]
run = "true"
after = ["build.base"]
[tapeout.base]
include = ["/etc/**"]
after = ["tapeout.app"]
[tapeout.app]
include = ["/app/**"]
after = ["build.app"]
[build.lib]
run = "true"
after = ["build.base"]
[image.app]
tapeouts = ["app", "base"]
"#)
    .unwrap();
    let order: Vec<String> = plan.builders[0].steps.iter().map(Step::id).collect();
    // Builds before tapeouts where dependencies allow, each in written
    // order: the seeds' phases.
    assert_eq!(
        order,
        [
            "build.base",
            "build.app",
            "build.lib",
            "tapeout.app",
            "tapeout.base"
        ]
    );
    assert_eq!(plan.images[0].tapeouts, ["app", "base"]);
}

#[test]
fn sets_become_build_args_and_labels() {
    let plan = parse(
        "[builder]\nenv = { A = \"1\" }\n[image.x]\ntapeouts = []\nlabels = { keep = \"k\" }\n",
        "s",
        Path::new("."),
        &[
            ("A".into(), "2".into()),
            ("label.version".into(), "1.2".into()),
        ],
    )
    .unwrap();
    assert_eq!(plan.builders[0].env, [("A".to_string(), "2".to_string())]);
    assert_eq!(
        plan.images[0].labels.get("version").map(String::as_str),
        Some("1.2")
    );
    assert_eq!(
        plan.images[0].labels.get("keep").map(String::as_str),
        Some("k")
    );
}

#[test]
fn bad_values() {
    assert!(err("[builder]\nfrom = \"docker\"\n").contains("expected host, scratch"));
    let e = err("[builder]\nfrom = \"docker://a/Upper\"\n");
    assert!(e.contains(":2:8") && e.contains("lowercase"), "{e}");
    let e = err("[image.i]\ntapeouts = []\nfrom = \"docker://a/b:bad tag\"\n");
    assert!(
        e.contains("image.i.from") && e.contains("malformed registry reference"),
        "{e}"
    );
    assert!(err("[builder]\nnetwork = \"wifi\"\n").contains("expected \"none\" or \"host\""));
    assert!(err("[tapeout.t]\ninclude = [\"relative\"]\n").contains("must be an absolute path"));
    assert!(err("[tapeout.t]\ninclude = [\"/a\"]\nowner = \"app\"\n")
        .contains("expected UID or UID:GID"));
    assert!(err("[image.i]\ntapeouts = [\"nope\"]\n").contains("unknown tapeout `nope`"));
    let e = err("[pod.p]\nimages = []\n");
    assert!(e.contains("unknown key `images`"), "{e}");
}

const MULTI: &str = r#"
[builder.build]
from = "scratch"
[builder.final]
from = "scratch"
[builder.test]
from = "builder:build"
after = "build.compile"

[build.compile]
builder = "build"
run = "true"
[build.more]
builder = "build"
after = ["build.compile"]
run = "true"
[tapeout.app]
after = ["build.compile"]
include = ["/out/**"]
[build.install]
builder = "final"
mounts = { "/in" = "tapeout.app" }
run = "true"
[build.check]
builder = "test"
run = "true"
[image.final]
builder = "final"
tapeouts = ["app"]
"#;

#[test]
fn several_builders_each_with_its_rules_in_dependency_order() {
    let plan = p(MULTI).unwrap();
    let names: Vec<&str> = plan.builders.iter().map(|b| b.name.as_str()).collect();
    // final mounts a tapeout of build, test starts from build: build first.
    assert_eq!(names, ["build", "final", "test"]);
    let ids = |b: usize| -> Vec<String> { plan.builders[b].steps.iter().map(Step::id).collect() };
    assert_eq!(ids(0), ["build.compile", "build.more", "tapeout.app"]);
    assert_eq!(ids(1), ["build.install"]);
    assert_eq!(ids(2), ["build.check"]);
    assert_eq!(plan.builders[1].deps, [0]);
    assert_eq!(plan.builders[2].deps, [0]);
    // test starts after build.compile, the first of build's steps.
    assert_eq!(
        plan.builders[2].parent,
        Some(BuilderState {
            builder: 0,
            upto: 1
        })
    );
    assert_eq!(plan.lineage(plan.builders[2].parent.unwrap()), [(0, 0)]);
    assert_eq!(plan.root_from(2), "scratch");
    // The image is final's state after its last rule, then the tapeout.
    let img = &plan.images[0];
    assert_eq!(
        img.builder,
        Some(BuilderState {
            builder: 1,
            upto: 1
        })
    );
    assert_eq!(img.from, "scratch");
    assert_eq!(img.tapeouts, ["app"]);
    let Step::Build(install) = &plan.builders[1].steps[0] else {
        panic!("not a rule")
    };
    assert_eq!(
        install.mounts,
        [TapeoutMount {
            target: PathBuf::from("/in"),
            tapeout: "app".into(),
            path: PathBuf::from("/"),
        }]
    );
}

#[test]
fn a_single_builder_table_keeps_working_and_has_no_name() {
    let plan = p("[builder]\nfrom = \"scratch\"\n[build.a]\nrun = \"true\"\n").unwrap();
    assert_eq!(plan.builders.len(), 1);
    assert_eq!(plan.builders[0].name, "");
    assert_eq!(plan.builders[0].label(), "");
    let plan = p(MULTI).unwrap();
    assert_eq!(plan.builders[0].label(), " (build)");
}

#[test]
fn builder_errors_name_the_key_and_the_choices() {
    // Several builders: a rule must say which.
    let e = err(&MULTI.replace("builder = \"test\"\n", ""));
    assert!(e.contains("build.check: which builder runs it? add builder = \"NAME\" (builders: build, final, test)"), "{e}");
    // An unknown builder, with a suggestion.
    let e = err(&MULTI.replace("builder = \"test\"", "builder = \"tset\""));
    assert!(
        e.contains("build.check.builder: unknown builder `tset`")
            && e.contains("did you mean `test`?"),
        "{e}"
    );
    // `after` of a builder names one of its parent's rules.
    let e = err(&MULTI.replace("after = \"build.compile\"", "after = \"build.install\""));
    assert!(e.contains("builder.test.after = \"build.install\": not a rule of builder build (its rules: build.compile, build.more)"), "{e}");
    // `after` without a builder parent.
    let e = err("[builder.a]\nfrom = \"scratch\"\nafter = \"build.x\"\n");
    assert!(
        e.contains("builder.a.after: only a builder with from = \"builder:NAME\""),
        "{e}"
    );
    // An unknown mounted tapeout.
    let e = err(&MULTI.replace("\"/in\" = \"tapeout.app\"", "\"/in\" = \"tapeout.ap\""));
    assert!(
        e.contains(
            "build.install.mounts.\"/in\": unknown tapeout `ap`; did you mean `tapeout.app`?"
        ),
        "{e}"
    );
    // An image of a builder has no `from` of its own.
    let e = err(&MULTI.replace(
        "builder = \"final\"\ntapeouts",
        "builder = \"final\"\nfrom = \"scratch\"\ntapeouts",
    ));
    assert!(
        e.contains("image.final: `from` and `builder` both given"),
        "{e}"
    );
    // An image of a host builder has no layers to start from.
    let e = err(
        "[builder.h]\nfrom = \"host\"\n[build.a]\nrun = \"true\"\n[image.i]\nbuilder = \"h\"\n",
    );
    assert!(
        e.contains("image.i.builder = \"h\": that builder starts from host"),
        "{e}"
    );
    // Builders that depend on each other.
    let cyc = "[builder.a]\nfrom = \"builder:b\"\n[builder.b]\nfrom = \"builder:a\"\n";
    assert!(
        err(cyc).contains("dependency cycle: builder.a -> builder.b -> builder.a"),
        "{}",
        err(cyc)
    );
    // A tapeout whose `after` rules run in two builders.
    let e = err(&MULTI.replace(
        "[tapeout.app]\nafter = [\"build.compile\"]",
        "[tapeout.app]\nafter = [\"build.compile\", \"build.check\"]",
    ));
    assert!(
        e.contains("tapeout.app: its `after` rules run in different builders"),
        "{e}"
    );
    // A rule naming a builder when the spec has one unnamed builder.
    let e = err("[build.a]\nbuilder = \"x\"\nrun = \"true\"\n");
    assert!(e.contains("the spec has one unnamed [builder]"), "{e}");
    // A spec error names its line.
    assert!(e.starts_with("shipyard.toml:2:"), "{e}");
}
