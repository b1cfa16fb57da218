//! Keeps ARCHITECTURE.md's dependency rule true: reads every `crate::X`
//! and `shipyard_image::X` path in both crates' sources and fails on an
//! edge the rule forbids. A new module must be given its place here (and
//! in ARCHITECTURE.md) before it can be used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may name whom, inside the image library (`image/src`). Modules
/// not named by a path (`std`, other crates) are not edges. [`LEAVES`]
/// may be used by every module besides.
const IMAGE: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("fsutil", &[]),
    ("reproducible", &[]),
    ("inroot", &[]),
    ("registries_conf", &[]),
    ("oci", &["fsutil", "reproducible"]),
    ("reference", &["registries_conf"]),
    ("rootfs", &["oci", "fsutil", "inroot", "reproducible"]),
    (
        "layer",
        &["rootfs", "oci", "fsutil", "inroot", "reproducible"],
    ),
    (
        "archive",
        &[
            "layer",
            "rootfs",
            "oci",
            "fsutil",
            "reproducible",
            "reference",
        ],
    ),
    ("cache", &["oci", "reference", "fsutil"]),
    (
        "registry",
        &["cache", "oci", "reference", "registries_conf", "fsutil"],
    ),
    (
        "transport",
        &[
            "archive",
            "cache",
            "oci",
            "reference",
            "registry",
            "registries_conf",
            "layer",
            "rootfs",
            "fsutil",
            "inroot",
            "reproducible",
        ],
    ),
];

/// Library modules every library module may use: they use none.
const LEAVES: &[&str] = &["error"];

/// Who may name whom inside the shipyard crate (`src`), in pipeline
/// order; every module may use the image library.
const SHIPYARD: &[(&str, &[&str])] = &[
    ("sandbox", &[]),
    ("containerfile", &[]),
    ("project", &["sandbox"]),
    ("tapeout", &["project", "sandbox"]),
    ("pod", &["project", "tapeout"]),
    ("sbom", &["project", "tapeout"]),
    (
        "frontend",
        &["containerfile", "project", "sandbox", "tapeout"],
    ),
    (
        "build",
        &[
            "containerfile",
            "project",
            "sandbox",
            "tapeout",
            "pod",
            "sbom",
        ],
    ),
    (
        "cli",
        &[
            "build",
            "containerfile",
            "frontend",
            "project",
            "sandbox",
            "tapeout",
            "pod",
            "sbom",
        ],
    ),
    ("main", &["cli"]),
    ("lib", &[]),
];

/// The module a source file belongs to: its first path component under
/// `src` (`build/mod.rs` → `build`, `cache.rs` → `cache`).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    first
        .unwrap_or_default()
        .trim_end_matches(".rs")
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a line names through `prefix` (`crate::` or
/// `shipyard_image::`), including grouped imports (`crate::{a, b::c}`).
fn named(line: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() && name != "self" {
                    out.push(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The modules of the crate whose sources are `root`: its directories and
/// files (a name through `crate::` that is not one is an item of the
/// crate root, which every module may use).
fn modules(root: &Path) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect()
}

/// Every (from, to, where) edge through `prefix` in the files under `root`
/// to a module of the crate whose sources are `target`.
fn edges(root: &Path, prefix: &str, target: &Path) -> Vec<(String, String, String)> {
    let targets = modules(target);
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let from = module_of(root, &f);
        if from == "architecture" {
            continue; // its tests name modules in strings
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue; // doc links are not dependencies
            }
            for to in named(code, prefix) {
                if to != from && targets.contains(&to) {
                    out.push((from.clone(), to, format!("{}:{}", f.display(), n + 1)));
                }
            }
        }
    }
    out
}

fn check(
    rule: &[(&str, &[&str])],
    edges: &[(String, String, String)],
    extra_allowed: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = rule
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut bad = Vec::new();
    for (from, to, at) in edges {
        if extra_allowed(to) {
            continue;
        }
        match allowed.get(from.as_str()) {
            None => bad.push(format!("{at}: module {from} has no place in the rule")),
            Some(ok) if !ok.contains(to.as_str()) => {
                bad.push(format!("{at}: {from} may not use {to}"))
            }
            Some(_) => {}
        }
    }
    bad
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_image_library_keeps_its_dependency_rule() {
    let root = repo().join("image/src");
    let e = edges(&root, "crate::", &root);
    assert!(
        e.len() > 50,
        "the scan found too few edges ({}); is it reading the sources?",
        e.len()
    );
    let bad = check(IMAGE, &e, &|to| LEAVES.contains(&to));
    assert!(
        bad.is_empty(),
        "forbidden edges (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
    let up = edges(&root, "shipyard::", &repo().join("src"));
    assert!(
        up.is_empty(),
        "the library names the shipyard crate: {up:?}"
    );
}

#[test]
fn the_shipyard_crate_keeps_its_dependency_rule() {
    let root = repo().join("src");
    let e = edges(&root, "crate::", &root);
    assert!(
        e.len() > 50,
        "the scan found too few edges ({}); is it reading the sources?",
        e.len()
    );
    let image: BTreeSet<&str> = IMAGE.iter().map(|(m, _)| *m).collect();
    let bad = check(SHIPYARD, &e, &|_| false);
    assert!(
        bad.is_empty(),
        "forbidden edges (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
    for (from, to, at) in edges(&root, "shipyard_image::", &repo().join("image/src")) {
        assert!(
            image.contains(to.as_str()),
            "{at}: {from} names shipyard_image::{to}, which has no place in the rule"
        );
    }
}

/// Errors are typed below the CLI: `anyhow` is named only by `cli` and
/// `main` (and by this file, which says so).
#[test]
fn anyhow_lives_only_at_the_cli_edge() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let src = files.len();
    rust_files(&repo().join("image/src"), &mut files);
    assert!(src > 20 && files.len() > src, "too few sources found");
    let own = repo().join("src/architecture.rs");
    let mut bad = Vec::new();
    for f in files {
        let m = module_of(&repo().join("src"), &f);
        if m == "cli" || m == "main" || f == own {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if text.contains("anyhow") {
            bad.push(f.display().to_string());
        }
    }
    assert!(bad.is_empty(), "anyhow below the CLI: {bad:?}");
}

#[test]
fn the_scan_sees_grouped_imports_and_ignores_other_crates() {
    assert_eq!(
        named("use crate::{build::x, cli, self};", "crate::"),
        ["build", "cli"]
    );
    assert_eq!(
        named("let a = crate::tapeout::run(other_crate::x);", "crate::"),
        ["tapeout"]
    );
    let edges = vec![(
        "sandbox".to_string(),
        "build".to_string(),
        "f.rs:1".to_string(),
    )];
    assert_eq!(
        check(SHIPYARD, &edges, &|_| false),
        ["f.rs:1: sandbox may not use build"]
    );
}
