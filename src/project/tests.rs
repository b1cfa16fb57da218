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
