//! Pods end to end: skopeo reads and copies them, a real registry stores
//! them, podman runs their images, and examples/pod runs as the pod it
//! describes.

use crate::common::pod::*;
use crate::common::registry::{lowercase_tempdir, podman, podman_run, require, Registry};
use crate::common::*;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pod_travels_whole_through_skopeo_and_a_registry_and_its_images_run() {
    require("skopeo");
    require("podman");
    let reg = Registry::start();
    let t = lowercase_tempdir("pod");
    let proj = project(t.path());
    let out = t.path().join("out");
    let digest = build_pod(&proj, &out);
    let src = format!("oci:{}:shop", out.display());
    // skopeo reads the index as we wrote it.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .unwrap();
    assert_success(&raw, "skopeo inspect --raw");
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        raw.stdout,
        std::fs::read(out.join("blobs/sha256").join(hex)).unwrap()
    );
    // skopeo copy --all there and back keeps the digest.
    let remote = reg.url("shop/pod:1.2.0");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src,
        &remote,
    ]));
    let back = t.path().join("back");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:shop", back.display()),
    ]));
    assert_eq!(digest_of_tag(&back, "shop"), digest);
    // shipyard pushes it whole and pulls it back whole.
    let cache = t.path().join("cache");
    let sy = |args: &[&str]| {
        let o = shipyard()
            .env("XDG_CACHE_HOME", &cache)
            .args(args)
            .output()
            .unwrap();
        assert_success(&o, &format!("{args:?}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let pushed = sy(&["push", "--tls-verify=false", &src, &reg.url("shop/pod2")]);
    assert_eq!(pushed, digest);
    let info = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &reg.url("shop/pod2:shop"),
    ]));
    assert!(info.contains("application/vnd.shipyard.pod.v1"), "{info}");
    let cache2 = t.path().join("cache2");
    let pulled_dir = t.path().join("pulled");
    let o = shipyard()
        .env("XDG_CACHE_HOME", &cache2)
        .args([
            "pull",
            "--tls-verify=false",
            &reg.url("shop/pod2:shop"),
            &format!("oci:{}", pulled_dir.display()),
        ])
        .output()
        .unwrap();
    assert_success(&o, "pull the pod");
    assert_eq!(digest_of_tag(&pulled_dir, "shop"), digest);
    let dest = t.path().join("deploy");
    sy(&[
        "pod",
        "unpack",
        &format!("oci:{}:shop", pulled_dir.display()),
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dest.join("volumes/gen/gen.txt")).unwrap(),
        "generated\n"
    );
    // Every member image runs.
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    for (image, file, want) in [
        ("web", "/out/web/id", "web"),
        ("worker", "/out/web/wid", "worker"),
    ] {
        let script = format!("read l < {file}; echo $l");
        let image = format!("oci:{}:{image}", out.display());
        let o = run(podman(&rt).args(podman_run(&image, &["/bin/sh", "-c", &script])));
        assert_eq!(o.trim_end().lines().last(), Some(want), "{o}");
    }
}

/// `podman run` arguments for one container of an unpacked pod (`shipyard
/// pod unpack` into `deployed`): its image from the unpacked layout, each
/// of its mounts bound read-only from `volumes/`, its args after the image.
/// `network` is `none` or `container:NAME`, which shares NAME's loopback
/// as the containers of a Kubernetes pod share theirs.
fn run_container(deployed: &Path, container: &serde_json::Value, network: &str) -> Vec<String> {
    let name = container["name"].as_str().unwrap();
    assert!(
        container.get("command").is_none(),
        "{name} keeps its image's entrypoint"
    );
    let mut v: Vec<String> = ["run", "--rm", "--network", network]
        .iter()
        .chain(&[
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .map(|s| s.to_string())
        .collect();
    for m in container["mounts"].as_array().unwrap() {
        let host = deployed.join("volumes").join(m["volume"].as_str().unwrap());
        v.push("-v".into());
        v.push(format!(
            "{}:{}:ro",
            host.display(),
            m["path"].as_str().unwrap()
        ));
    }
    v.push(format!("oci:{}:{name}", deployed.join("images").display()));
    for a in container["args"].as_array().unwrap() {
        v.push(a.as_str().unwrap().into());
    }
    v
}

/// Removes a detached container when the test ends, passed or not.
struct Detached<'a> {
    rt: &'a Path,
    name: String,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = podman(self.rt).args(["rm", "-f", &self.name]).output();
    }
}

/// examples/pod, the seeds' pod phase, as a user builds and deploys it: the
/// Kubernetes manifest pins both images and carries both configuration
/// files; unpacked, the pod's two containers run under podman with their
/// volumes where the pod mounts them and share a loopback. The client
/// prints what it fetched from the server: the server's greeting and port
/// come from its config file, the client's fetch list from its own, the
/// bodies from the static volume and the volume the build generated.
#[test]
fn the_pod_example_builds_and_its_containers_serve_their_config_and_data() {
    require("podman");
    let t = lowercase_tempdir("podex");
    let example = src_dir().join("examples/pod");
    let proj = t.path().join("pod");
    for e in walkdir::WalkDir::new(&example) {
        let e = e.unwrap();
        let dest = proj.join(e.path().strip_prefix(&example).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(dest).unwrap();
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
    let cache = t.path().join("cache");
    let sy = |args: &[&str]| {
        let o = shipyard()
            .env("XDG_CACHE_HOME", &cache)
            .args(args)
            .output()
            .unwrap();
        assert_success(&o, &format!("{args:?}"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = t.path().join("out");
    sy(&[
        "build",
        proj.to_str().unwrap(),
        "--output",
        &format!("oci:{}", out.display()),
    ]);
    assert_eq!(
        digest_of_tag(&out, "demo"),
        digest_of_tag(&out, "demo:1.0.0")
    );
    let pod = format!("oci:{}:demo", out.display());

    // The Kubernetes manifest: the files as a ConfigMap, both images
    // pinned where the pod would be pushed, the data volumes by subPath.
    let docs = pyyaml(&sy(&[
        "pod",
        "kube",
        &pod,
        "--registry",
        "docker://registry.example/demo/pod",
    ]));
    let conf = |f: &str| std::fs::read_to_string(proj.join("conf").join(f)).unwrap();
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[0]["data"]["server.conf"], conf("server.conf"));
    assert_eq!(docs[0]["data"]["client.conf"], conf("client.conf"));
    let spec = &docs[1]["spec"];
    let container = |name: &str| {
        spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name} in {spec}"))
            .clone()
    };
    for name in ["server", "client"] {
        assert_eq!(
            container(name)["image"],
            format!("registry.example/demo/pod@{}", digest_of_tag(&out, name))
        );
    }
    let server = container("server");
    assert_eq!(server["args"][0], "/etc/demo/server.conf");
    assert_eq!(server["ports"][0]["containerPort"], 8080);
    let mounts: Vec<(String, String)> = server["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let sub = m["subPath"].as_str().unwrap_or("");
            (m["mountPath"].as_str().unwrap().into(), sub.into())
        })
        .collect();
    for (path, sub) in [("/srv/static", "static"), ("/srv/gen", "gen")] {
        assert!(
            mounts.contains(&(path.into(), sub.into())),
            "{path} from {sub}: {mounts:?}"
        );
    }

    // Both containers read their configuration from the ConfigMap.
    for name in ["server", "client"] {
        let m = &container(name)["volumeMounts"][0];
        assert_eq!(
            (&m["mountPath"], &m["name"]),
            (&"/etc/demo".into(), &"config".into())
        );
    }
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "demo-config");

    // Unpacked: the volumes hold the config, the selected static files
    // (not the draft) and what the build generated.
    let deployed = t.path().join("deployed");
    sy(&["pod", "unpack", &pod, deployed.to_str().unwrap()]);
    let vol = |p: &str| std::fs::read_to_string(deployed.join("volumes").join(p)).unwrap();
    assert_eq!(vol("config/server.conf"), conf("server.conf"));
    assert!(!deployed.join("volumes/static/draft.txt").exists());
    let sums = Command::new("sha256sum")
        .args(["server.c", "client.c"])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert_success(&sums, "sha256sum");
    let sums = String::from_utf8(sums.stdout).unwrap();
    assert_eq!(vol("gen/build-info.txt"), sums);

    // Run it: the server detached, the client in the server's network
    // namespace, each container as pod.json describes it.
    let def: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deployed.join("pod.json")).unwrap()).unwrap();
    let of = |name: &str| {
        def["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let server = Detached {
        rt: &rt,
        name: format!("{}-server", t.path().file_name().unwrap().to_str().unwrap()),
    };
    let mut args = run_container(&deployed, &of("server"), "none");
    args.splice(
        1..1,
        ["-d".to_string(), "--name".into(), server.name.clone()],
    );
    run(podman(&rt).args(&args));
    let network = format!("container:{}", server.name);
    let o = podman(&rt)
        .args(run_container(&deployed, &of("client"), &network))
        .output()
        .unwrap();
    let logs = podman(&rt).args(["logs", &server.name]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    let what = format!(
        "{said}{}\nserver's log:\n{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(o.status.success(), "the client failed: {what}");
    let greeting = "greeting: hello from the pod's server\n";
    let want = format!(
        "GET /static/index.html: 200 OK\n{greeting}{}\
         GET /static/css/site.css: 200 OK\n{greeting}{}\
         GET /gen/build-info.txt: 200 OK\n{greeting}{sums}",
        vol("static/index.html"),
        vol("static/css/site.css"),
    );
    assert_eq!(said, want, "{what}");
}
