//! A two-image pod project for the pod tests: a shell base, two images
//! built on it in one pass, a config file, a source volume and a volume
//! from the builder; and the kube YAML as the tests read it.

use super::*;
use std::path::{Path, PathBuf};

pub const SPEC: &str = r#"[builder]
from = "host"

[build.b]
run = "mkdir -p /out/web /out/data && echo web > /out/web/id && echo worker > /out/web/wid && echo generated > /out/data/gen.txt"

[tapeout.web]
after = ["build.b"]
include = ["/out/web/id"]

[tapeout.worker]
after = ["build.b"]
include = ["/out/web/wid"]

[tapeout.gen]
after = ["build.b"]
include = ["/out/data/**"]
remap = { "/out/data" = "/" }
owner = "1000:1000"

[image.web]
from = "oci:base:v1"
tapeouts = ["web"]

[image.worker]
from = "oci:base:v1"
tapeouts = ["worker"]

[pod.shop]
version = "1.2.0"
annotations = { "org.example.team" = "infra" }
files = { "app.conf" = "conf/app.conf" }

[pod.shop.containers.web]
image = "web"
command = ["/bin/sh", "-c", "cat /etc/app/app.conf /srv/static/index.html /srv/gen/gen.txt"]
env = { MODE = "prod" }
ports = ["8080", "9090/udp"]
mounts = { "/etc/app" = "config", "/srv/static" = "static", "/srv/gen" = "gen" }

[pod.shop.containers.worker]
image = "worker"

[pod.shop.containers.shell]
image = "oci:base:v1"

[pod.shop.volumes.static]
source = "static"
include = ["index.html", "css"]
mode = "0640"

[pod.shop.volumes.gen]
tapeout = "gen"
"#;

/// Writes the project into `dir` (with its shell base layout) and returns
/// the project directory.
pub fn project(dir: &Path) -> PathBuf {
    let p = dir.join("proj");
    write(&p.join("conf/app.conf"), b"greeting=hi\n", 0o644);
    write(&p.join("static/index.html"), b"<h1>shop</h1>\n", 0o644);
    write(&p.join("static/css/site.css"), b"body{}\n", 0o644);
    write(&p.join("static/draft.txt"), b"not selected\n", 0o644);
    std::fs::write(p.join("shipyard.toml"), SPEC).unwrap();
    let root = dir.join("baseroot");
    shell_rootfs(&root);
    diff_scratch(&root, &format!("oci:{}:v1", p.join("base").display()), &[]);
    p
}

/// Builds the project into `out`; returns the pod's index digest.
pub fn build_pod(proj: &Path, out: &Path) -> String {
    let o = shipyard()
        .arg("build")
        .arg(proj)
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .output()
        .unwrap();
    assert_success(&o, "build the pod");
    digest_of_tag(out, "shop:1.2.0")
}

/// The YAML documents as PyYAML's safe_load reads them (YAML 1.1, as
/// older Kubernetes tooling does), as JSON.
pub fn pyyaml(y: &str) -> serde_json::Value {
    let py = "import sys, yaml, json; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))";
    let mut c = std::process::Command::new("/usr/bin/python3")
        .args(["-c", py])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(y.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_success(&o, "python3 yaml.safe_load_all (python3-yaml)");
    serde_json::from_slice(&o.stdout).unwrap()
}
