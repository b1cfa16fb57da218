//! `shipyard pod kube`: a Kubernetes Pod manifest for a pod, with every
//! image pinned by digest, the config files as a ConfigMap, and the data
//! volumes as one `image` volume (the pod's artifact, which holds each
//! volume under its own directory) mounted with `subPath`.
//!
//! Image volumes need Kubernetes 1.31+ with the ImageVolume feature (beta,
//! on by default, from 1.33 with subPath) and a runtime that mounts OCI
//! artifacts (CRI-O; containerd 2.1+). On clusters without them, unpack the
//! volumes with `shipyard pod unpack` onto a persistent volume instead.

use super::read::Pod;
use super::{Definition, PodError};
use crate::project::CONFIG_VOLUME;
use base64::Engine;
use serde_json::{json, Value};
use shipyard_image::reference::{Reference, RegistryRef};
use std::fmt::Write;

/// The image volume holding every data volume.
const DATA_VOLUME: &str = "pod-data";

/// Where the pod lives in a registry, for image references.
fn pinned(repo: &RegistryRef, digest: &str) -> String {
    format!("{}/{}@{digest}", repo.registry, repo.repository)
}

/// YAML for a JSON value: block style, every string double-quoted (JSON
/// string syntax is valid YAML), so no value can be misread.
fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = yaml_key(k);
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(x, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(x, indent, out);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(x));
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        let mut inner = String::new();
                        yaml(x, indent + 2, &mut inner);
                        // The first line goes after the dash.
                        let body = inner.trim_start_matches(' ');
                        let _ = write!(out, "{pad}- {body}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(x));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

/// Keys are bare when no YAML reader can take them for anything but a
/// string, double-quoted otherwise: YAML 1.1 readers (PyYAML, and the
/// go-yaml v2 that older Kubernetes tools use) read `on`, `yes`, `n` as
/// booleans and `null`, `~` as null, which would make two ConfigMap keys
/// collide.
fn yaml_key(k: &str) -> String {
    const RESERVED: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && k.as_bytes()[0].is_ascii_alphabetic()
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(k));
    if plain {
        k.to_string()
    } else {
        // JSON string syntax is valid YAML; a &str always serializes.
        serde_json::to_string(k).unwrap_or_default()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A ConfigMap key for a path in the config volume.
fn key_of(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders the Pod (and its ConfigMap) as YAML documents.
pub fn render(
    pod: &Pod,
    config_files: &[(String, Vec<u8>)],
    registry: Option<&RegistryRef>,
) -> Result<String, PodError> {
    let def: &Definition = &pod.definition;
    let image_of = |container: &str, digest: &str| -> Result<String, PodError> {
        if let Some(r) = registry {
            return Ok(pinned(r, digest));
        }
        let src = def
            .containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.source.clone());
        match src.map(|s| Reference::parse(&s)) {
            Some(Ok(Reference::Registry(r))) => Ok(pinned(&r, digest)),
            _ => Err(PodError::UnnamedImage(container.to_string())),
        }
    };
    let has_data = def.volumes.iter().any(|v| v.name != CONFIG_VOLUME);
    let mut containers = Vec::new();
    for c in &def.containers {
        let mut mounts = Vec::new();
        for m in &c.mounts {
            if m.volume == CONFIG_VOLUME {
                mounts.push(json!({"name": CONFIG_VOLUME, "mountPath": m.path, "readOnly": true}));
            } else {
                mounts.push(json!({"name": DATA_VOLUME, "mountPath": m.path, "subPath": m.volume, "readOnly": true}));
            }
        }
        let mut o = json!({"name": c.name, "image": image_of(&c.name, &c.image)?});
        if let Some(cmd) = &c.command {
            o["command"] = json!(cmd);
        }
        if let Some(a) = &c.args {
            o["args"] = json!(a);
        }
        if !c.env.is_empty() {
            o["env"] = json!(c
                .env
                .iter()
                .map(|e| json!({"name": e.name, "value": e.value}))
                .collect::<Vec<_>>());
        }
        if !c.ports.is_empty() {
            o["ports"] = json!(c
                .ports
                .iter()
                .map(|p| json!({"containerPort": p.port, "protocol": p.protocol.to_ascii_uppercase()}))
                .collect::<Vec<_>>());
        }
        if !mounts.is_empty() {
            o["volumeMounts"] = json!(mounts);
        }
        containers.push(o);
    }
    let mut volumes = Vec::new();
    if !config_files.is_empty() {
        volumes.push(json!({"name": CONFIG_VOLUME, "configMap": {
            "name": format!("{}-config", def.name),
            "items": config_files.iter().map(|(p, _)| json!({"key": key_of(p), "path": p})).collect::<Vec<_>>(),
        }}));
    }
    if has_data {
        let art = pod.artifact.digest().to_string();
        let reference = match registry {
            Some(r) => pinned(r, &art),
            None => return Err(PodError::DataNeedsRegistry),
        };
        volumes.push(json!({"name": DATA_VOLUME, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}));
    }
    let mut annotations = serde_json::Map::new();
    for (k, v) in &pod.annotations {
        annotations.insert(k.clone(), json!(v));
    }
    annotations.insert(
        "io.shipyard.pod.digest".into(),
        json!(pod.digest.to_string()),
    );
    let mut spec = json!({"containers": containers});
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    let podv = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": def.name,
            "labels": {"app.kubernetes.io/name": def.name, "app.kubernetes.io/version": def.version},
            "annotations": annotations,
        },
        "spec": spec,
    });
    let mut out = String::new();
    if !config_files.is_empty() {
        let mut data = serde_json::Map::new();
        let mut binary = serde_json::Map::new();
        for (p, bytes) in config_files {
            match std::str::from_utf8(bytes) {
                Ok(t) => data.insert(key_of(p), json!(t)),
                Err(_) => binary.insert(
                    key_of(p),
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ),
            };
        }
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{}-config", def.name)}});
        if !data.is_empty() {
            cm["data"] = Value::Object(data);
        }
        if !binary.is_empty() {
            cm["binaryData"] = Value::Object(binary);
        }
        out.push_str("---\n");
        yaml(&cm, 0, &mut out);
    }
    out.push_str("---\n");
    yaml(&podv, 0, &mut out);
    Ok(out)
}
