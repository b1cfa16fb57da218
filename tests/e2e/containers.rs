//! Building where CI runs: inside containers (issue 13).
//!
//! shipyard runs inside (a) a rootless podman container, as the
//! container's root and as uid 1000, and (b) a Docker container with
//! Docker's default seccomp profile (`--network none`), as root and as
//! uid 1000. The container is the CI image scripts/test makes once (a
//! bookworm minbase with gcc: `SHIPYARD_CI_IMAGE`, an OCI layout for
//! podman, and `SHIPYARD_CI_DOCKER_IMAGE`, imported into the dockerd that
//! scripts/test starts). The shipyard binary goes in read-only.
//!
//! In each container shipyard builds examples/hello (`from = "host"`: the
//! container's own cc) and a small spec with an `oci:` builder, into a
//! bind-mounted directory. Outside, podman runs the images, and their
//! digests equal a build of the same inputs on the bare machine with the
//! same SOURCE_DATE_EPOCH. The `==> isolation: LEVEL (why)` line on stderr
//! must name the level each cell expects (see `Cell`).
//!
//! Nothing is skipped: a missing tool, a dockerd that does not answer or a
//! missing CI image fails the test. Without a subordinate id range rootless
//! podman cannot hold the CI image at all; that refusal is asserted.

use crate::common::registry::{
    lowercase_tempdir, podman, podman_run, podman_run_with, remove_at_exit, require,
};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const EPOCH: &str = "1700000000";
/// What examples/hello prints with the argument `e2e`.
const HELLO_SAYS: &str = "hello from shipyard, e2e";
const GREETING: &str = "built where CI runs";

/// The CI image as an OCI reference (`oci:DIR:TAG`) for podman and for
/// the bare-machine reference build.
fn ci_image_oci() -> String {
    let r = std::env::var("SHIPYARD_CI_IMAGE")
        .unwrap_or_else(|_| "oci:/var/cache/shipyard-tests/ci:bookworm-ci".to_string());
    let dir = r
        .strip_prefix("oci:")
        .and_then(|d| d.rsplit_once(':'))
        .map(|(d, _)| d.to_string())
        .unwrap_or_else(|| panic!("SHIPYARD_CI_IMAGE={r} is not oci:DIR:TAG"));
    assert!(
        Path::new(&dir).join("index.json").is_file(),
        "no CI image at {r} (scripts/test makes it as root)"
    );
    r
}

/// The CI image's name in the dockerd scripts/test starts.
fn ci_image_docker() -> String {
    std::env::var("SHIPYARD_CI_DOCKER_IMAGE")
        .unwrap_or_else(|_| "shipyard-test-ci:bookworm".to_string())
}

fn docker() -> Command {
    require("docker");
    Command::new("docker")
}

/// Checks once that the dockerd answers and holds the CI image.
fn docker_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let out = docker().arg("info").output().unwrap();
        assert!(
            out.status.success(),
            "no dockerd answers (DOCKER_HOST={:?}; scripts/test as root starts one): {}",
            std::env::var("DOCKER_HOST").ok(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = docker()
            .args(["image", "inspect", "-f", "{{.Id}}", &ci_image_docker()])
            .output()
            .unwrap();
        assert_success(&out, "docker image inspect of the CI image");
    });
}

/// The CI image pulled into this user's rootless podman store (once per
/// test binary); its image id. Without a subordinate range podman refuses
/// it (its files belong to gid 42, shadow, among others): `None`, after
/// asserting podman says so.
fn podman_ci_image() -> Option<String> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let rt = runtime_dir();
        let out = podman(&rt)
            .args(["pull", "-q", &ci_image_oci()])
            .output()
            .unwrap();
        if !out.status.success() && !ids_range_mapped() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("insufficient UIDs or GIDs"), "{err}");
            eprintln!(
                "note: rootless podman without a subordinate id range refuses the CI image \
                 (checked: podman says so); the podman cells need shipyard-sub"
            );
            return None;
        }
        assert_success(&out, "podman pull of the CI image");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!id.is_empty(), "podman pull printed no image id");
        Some(id)
    })
    .clone()
}

/// An XDG_RUNTIME_DIR for podman when the user has none (kept for the
/// test binary's life).
fn runtime_dir() -> PathBuf {
    static RT: OnceLock<PathBuf> = OnceLock::new();
    RT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        remove_at_exit(&d);
        d
    })
    .clone()
}

/// Inputs shared by every cell and the bare-machine builds: a tiny `oci:`
/// builder (the host's /bin/sh and its libraries), the small spec on it,
/// examples/hello turned into a spec on an `oci:` builder of the CI image
/// (the reference for hello), and the bare-machine digests.
struct Inputs {
    dir: PathBuf,
    small_digest: String,
    hello_digest: String,
}

impl Inputs {
    fn small(&self) -> PathBuf {
        self.dir.join("small")
    }
}

fn small_spec(base: &str) -> String {
    format!(
        r#"
[builder]
from = "{base}"
network = "none"

[build.greet]
run = "echo {GREETING} > /greeting.txt"

[tapeout.greet]
after = ["build.greet"]
include = ["/greeting.txt"]

[image.greet]
from = "{base}"
tapeouts = ["greet"]
entrypoint = ["/bin/sh", "-c", "read l < /greeting.txt; echo \"$l\""]
"#
    )
}

fn bare_build(spec_dir: &Path, layout: &Path, cache: &Path) {
    let out = shipyard()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("XDG_CACHE_HOME", cache)
        .arg("build")
        .arg(spec_dir)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert_success(
        &out,
        &format!("bare-machine build of {}", spec_dir.display()),
    );
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        // The containers see this directory at the same path, read-only,
        // so the specs (and the base references they name) are the same
        // text inside and outside.
        let dir = tempfile::Builder::new()
            .prefix("shipyard-ci-inputs-")
            .tempdir()
            .unwrap()
            .keep();
        remove_at_exit(&dir);
        let root = dir.join("shroot");
        shell_rootfs(&root);
        let base = format!("oci:{}:sh", dir.join("base").display());
        diff_scratch(&root, &base, &[]);
        let small = dir.join("small");
        write(
            &small.join("shipyard.toml"),
            small_spec(&base).as_bytes(),
            0o644,
        );
        // examples/hello on an `oci:` builder that is the CI image: the
        // same compiler and libraries its `host` builder sees inside the
        // containers, so the same image.
        let hello = dir.join("hello");
        let spec = std::fs::read_to_string(src_dir().join("examples/hello/shipyard.toml")).unwrap();
        assert!(spec.contains("from = \"host\""), "{spec}");
        write(
            &hello.join("shipyard.toml"),
            spec.replacen(
                "from = \"host\"",
                &format!("from = \"{}\"", ci_image_oci()),
                1,
            )
            .as_bytes(),
            0o644,
        );
        std::fs::copy(
            src_dir().join("examples/hello/hello.c"),
            hello.join("hello.c"),
        )
        .unwrap();
        let cache = dir.join("cache");
        let out = dir.join("bare");
        bare_build(&small, &out, &cache);
        bare_build(&hello, &out, &cache);
        std::fs::remove_dir_all(&cache).unwrap();
        let small_digest = digest_of_tag(&out, "greet");
        let hello_digest = digest_of_tag(&out, "hello");
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        // Readable (and traversable) by the containers' uid 1000.
        let chmod = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(&dir)
            .output()
            .unwrap();
        assert_success(&chmod, "chmod a+rX");
        Inputs {
            dir,
            small_digest,
            hello_digest,
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    /// Rootless podman (the test user's), default seccomp profile.
    Podman,
    /// The dockerd scripts/test starts, Docker's default seccomp profile.
    Docker,
}

/// One cell of the matrix and what it expects.
struct Cell {
    name: &'static str,
    engine: Engine,
    /// `--user` in the container; `None` = the container's root.
    user: Option<&'static str>,
    /// examples/hello: the level named in the `==> isolation:` line, and
    /// the environment the build gets (`SHIPYARD_ISOLATION`).
    hello_level: &'static str,
    hello_env: &'static [(&'static str, &'static str)],
    /// The `oci:` builder spec: the level, or `None` when no level can run
    /// an `oci:` builder there (the build must fail and say why).
    small_level: Option<&'static str>,
    /// Force `--isolation userns` once more and expect the refusal.
    force_userns_fails: bool,
}

/// What one shipyard command inside the container did.
struct Ran {
    rc: i32,
    stderr: String,
}

/// Runs the builds of `cell` in one container; the layouts land in the
/// returned directory (`hello`, `small`).
fn run_cell(cell: &Cell, image: &str) -> (tempfile::TempDir, Vec<(String, Ran)>) {
    let inputs = inputs();
    let out = lowercase_tempdir(&format!("ci-{}", cell.name));
    let layouts = out.path().join("layouts");
    mkdir(&layouts, 0o777);
    mkdir(out.path(), 0o755);
    let hello_src = src_dir().join("examples/hello");
    let small = inputs.small();
    let mut cmds: Vec<(&str, String)> = vec![];
    let env: String = cell
        .hello_env
        .iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    cmds.push((
        "hello",
        format!("env {env}shipyard build /src --output oci:/layouts/hello"),
    ));
    cmds.push((
        "small",
        format!(
            "shipyard build {} --output oci:/layouts/small",
            small.display()
        ),
    ));
    if cell.force_userns_fails {
        cmds.push((
            "forced",
            "shipyard build /src --output oci:/layouts/forced --isolation userns".to_string(),
        ));
    }
    // examples/hello is mounted where its spec mounts it in the builder
    // (/src), as a CI job's checkout is its workspace: with `none` no
    // mount can be made, and the rules read the sources where they are.
    // Every command runs, whatever the one before did; its exit code and
    // output are kept in files; what the container made is left
    // removable by the test user.
    let mut script = String::from("cd /tmp\n");
    for (name, c) in &cmds {
        script.push_str(&format!(
            "{c} >/layouts/{name}.out 2>/layouts/{name}.err; echo $? >/layouts/{name}.rc\n"
        ));
    }
    script.push_str("chmod -R a+rwX /layouts/*\n");
    let mut opts: Vec<String> = vec![
        "-v".into(),
        format!("{}:/usr/local/bin/shipyard:ro", bin().display()),
        "-v".into(),
        format!("{}:/src:ro", hello_src.display()),
        "-v".into(),
        format!("{0}:{0}:ro", inputs.dir.display()),
        "-v".into(),
        format!("{}:/layouts", layouts.display()),
        "-e".into(),
        format!("SOURCE_DATE_EPOCH={EPOCH}"),
        "-e".into(),
        "HOME=/tmp".into(),
        "-e".into(),
        "XDG_CACHE_HOME=/tmp/shipyard-cache".into(),
    ];
    if let Some(u) = cell.user {
        opts.push("--user".into());
        opts.push(u.into());
    }
    let argv = ["/bin/sh", "-c", script.as_str()];
    let ran = match cell.engine {
        Engine::Podman => podman(&runtime_dir())
            .args(podman_run_with(&opts, image, &argv))
            .output()
            .unwrap(),
        Engine::Docker => docker()
            .args(["run", "--rm", "--network", "none"])
            .args(&opts)
            .arg(image)
            .args(argv)
            .output()
            .unwrap(),
    };
    assert_success(&ran, &format!("the {} container", cell.name));
    let results = cmds
        .iter()
        .map(|(name, _)| {
            let read = |ext: &str| {
                std::fs::read_to_string(layouts.join(format!("{name}.{ext}")))
                    .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
            };
            let rc = read("rc").trim().parse().unwrap();
            (
                name.to_string(),
                Ran {
                    rc,
                    stderr: read("err"),
                },
            )
        })
        .collect();
    (out, results)
}

/// The `==> isolation: LEVEL (why)` line of a build's stderr.
fn isolation_line(stderr: &str) -> Option<&str> {
    stderr.lines().find(|l| l.starts_with("==> isolation: "))
}

fn assert_level(what: &str, ran: &Ran, level: &str) {
    assert_eq!(
        ran.rc, 0,
        "{what}: the build failed inside the container:\n{}",
        ran.stderr
    );
    let line = isolation_line(&ran.stderr).unwrap_or_else(|| {
        panic!(
            "{what}: no `==> isolation:` line on stderr:\n{}",
            ran.stderr
        )
    });
    assert!(
        line.starts_with(&format!("==> isolation: {level} (")),
        "{what}: expected isolation {level}, got: {line}"
    );
}

/// podman (outside, as the test user) runs `tag` of `layout`; returns the
/// last line it printed.
fn podman_runs(layout: &Path, tag: &str, argv: &[&str]) -> String {
    let out = podman(&runtime_dir())
        .args(podman_run(&format!("oci:{}:{tag}", layout.display()), argv))
        .output()
        .unwrap();
    assert_success(&out, &format!("podman run {tag}"));
    String::from_utf8_lossy(&out.stdout)
        .trim_end()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn check_cell(cell: Cell) {
    let image = match cell.engine {
        Engine::Podman => match podman_ci_image() {
            Some(id) => id,
            // Refused, and podman said why (asserted): nothing can run.
            None => return,
        },
        Engine::Docker => {
            docker_ready();
            ci_image_docker()
        }
    };
    let inputs = inputs();
    let (out, results) = run_cell(&cell, &image);
    let get = |n: &str| &results.iter().find(|(name, _)| name == n).unwrap().1;
    let layouts = out.path().join("layouts");

    let hello = get("hello");
    assert_level(
        &format!("{}: examples/hello", cell.name),
        hello,
        cell.hello_level,
    );
    let hl = layouts.join("hello");
    assert_eq!(
        digest_of_tag(&hl, "hello"),
        inputs.hello_digest,
        "{}: examples/hello differs from the bare-machine build on the same CI image",
        cell.name
    );
    assert_eq!(podman_runs(&hl, "hello", &["e2e"]), HELLO_SAYS);

    let small = get("small");
    match cell.small_level {
        Some(level) => {
            assert_level(&format!("{}: the oci: builder", cell.name), small, level);
            let sl = layouts.join("small");
            assert_eq!(
                digest_of_tag(&sl, "greet"),
                inputs.small_digest,
                "{}: the oci: builder's image differs from the bare-machine build",
                cell.name
            );
            assert_eq!(podman_runs(&sl, "greet", &[]), GREETING);
        }
        None => {
            // Nothing can enter an `oci:` builder here: the error says
            // what was tried and what would make it work.
            assert_ne!(small.rc, 0, "{}: the oci: builder built", cell.name);
            let err = &small.stderr;
            for word in ["userns", "chroot", "seccomp"] {
                assert!(
                    err.contains(word),
                    "{}: the error does not mention {word}:\n{err}",
                    cell.name
                );
            }
        }
    }

    if cell.force_userns_fails {
        // Docker's default profile refuses user namespaces: forcing them
        // fails, naming what was tried and each way out.
        let forced = get("forced");
        assert_ne!(forced.rc, 0, "{}: --isolation userns built", cell.name);
        let err = &forced.stderr;
        for word in [
            "user namespace",
            "sysctl",
            "--security-opt seccomp=",
            "--isolation none",
        ] {
            assert!(
                err.contains(word),
                "{}: the --isolation userns error does not mention {word:?}:\n{err}",
                cell.name
            );
        }
    }
}

/// Rootless podman, the container's root (the test user outside): a user
/// namespace can be made, but the container's id map is partial (writing
/// a full map is refused: single-id map) and its /proc has masked paths
/// (a fresh proc mount is refused: /proc bound read-only). Still userns,
/// so every build works and gives the bare machine's digests.
#[test]
fn rootless_podman_as_the_containers_root() {
    check_cell(Cell {
        name: "podman-root",
        engine: Engine::Podman,
        user: None,
        hello_level: "userns",
        hello_env: &[],
        small_level: Some("userns"),
        force_userns_fails: false,
    });
}

/// Rootless podman, uid 1000 in the container: no newuidmap and no
/// subordinate range there (single-id map), fresh /proc refused (bound
/// /proc): userns, same digests.
#[test]
fn rootless_podman_as_uid_1000() {
    check_cell(Cell {
        name: "podman-1000",
        engine: Engine::Podman,
        user: Some("1000:1000"),
        hello_level: "userns",
        hello_env: &[],
        small_level: Some("userns"),
        force_userns_fails: false,
    });
}

/// Docker's default seccomp profile, as root: unshare(CLONE_NEWUSER) is
/// refused, root has CAP_SYS_CHROOT (and CAP_MKNOD) but not CAP_SYS_ADMIN:
/// the `oci:` builder is entered with chroot on a copy; hello's `host`
/// builder needs bind mounts, so there the container is the builder
/// (none). Same digests either way. Forcing userns fails and says how to
/// get it.
#[test]
fn docker_default_seccomp_as_root() {
    check_cell(Cell {
        name: "docker-root",
        engine: Engine::Docker,
        user: None,
        hello_level: "none",
        hello_env: &[],
        small_level: Some("chroot"),
        force_userns_fails: true,
    });
}

/// Docker's default seccomp profile, as uid 1000: no user namespaces, no
/// chroot. Only `none` works, and only for `from = "host"`: the container
/// is the builder (chosen by auto). The rules see the
/// same files as anywhere else in the CI image, so hello's digest is the
/// same. The `oci:` builder cannot be entered at all: the build fails and
/// says what was tried and what would fix it.
#[test]
fn docker_default_seccomp_as_uid_1000() {
    check_cell(Cell {
        name: "docker-1000",
        engine: Engine::Docker,
        user: Some("1000:1000"),
        hello_level: "none",
        hello_env: &[],
        small_level: None,
        force_userns_fails: false,
    });
}
