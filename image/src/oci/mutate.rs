//! Edits of an image's configuration and manifest, as pure functions (in
//! the manner of go-containerregistry's `mutate`), kept apart from reading
//! and writing layouts so that they are tested alone: what `shipyard
//! config` changes ([`edit_config`]), and what `shipyard build` declares
//! on the image it assembles ([`declare`], [`manifest`]).
//!
//! An edit never touches layers: the result is a new config and a new
//! manifest naming the same layers, and the old manifest stays as it was.

use crate::oci::config::{Healthcheck, ImageConfig};
use oci_spec::image::{
    Config, Descriptor, History, ImageManifest, ImageManifestBuilder, MediaType,
};
use std::collections::{BTreeMap, HashMap};

/// A change to one list- or map-valued setting: set some keys, remove
/// others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEdit {
    /// Keys to set (or replace), with their values.
    pub set: Vec<(String, String)>,
    /// Keys to remove, before the sets are applied.
    pub remove: Vec<String>,
}

impl MapEdit {
    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, map: &mut BTreeMap<String, String>) {
        for k in &self.remove {
            map.remove(k);
        }
        for (k, v) in &self.set {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// What to change. `None` leaves a setting as it is; for the
/// command-like settings, `Some(vec![])` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEdit {
    /// The entrypoint (`Some(vec![])` clears it).
    pub entrypoint: Option<Vec<String>>,
    /// The command (`Some(vec![])` clears it).
    pub cmd: Option<Vec<String>>,
    /// Environment variables, `KEY` to value.
    pub env: MapEdit,
    /// Config labels.
    pub labels: MapEdit,
    /// Manifest annotations (not in the config; see [`annotations`]).
    pub annotations: MapEdit,
    /// The user the container runs as (`UID[:GID]` or a name).
    pub user: Option<String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// Ports as `N[/PROTO]` (`/tcp` when absent).
    pub ports: MapEdit,
    /// Volume mount points (the values are ignored).
    pub volumes: MapEdit,
    /// The signal that stops the container.
    pub stop_signal: Option<String>,
    /// The image's author.
    pub author: Option<String>,
    /// RFC 3339.
    pub created: Option<String>,
    /// The platform the image says it is for (os, architecture, variant).
    pub platform: Option<crate::oci::image::Platform>,
    /// The history entry's `created_by` (what was run).
    pub created_by: String,
}

/// `N` → `N/tcp`, as `docker` and the image spec spell exposed ports.
pub(crate) fn port_key(p: &str) -> String {
    if p.contains('/') {
        p.to_string()
    } else {
        format!("{p}/tcp")
    }
}

/// Applies `edit` to `config`: returns the edited copy, with a history
/// entry (an empty layer) saying what was done.
pub fn edit_config(config: &ImageConfig, edit: &ConfigEdit) -> ImageConfig {
    let mut out = config.clone();
    let mut c: Config = out.config().clone().unwrap_or_default();
    if let Some(e) = &edit.entrypoint {
        c.set_entrypoint((!e.is_empty()).then(|| e.clone()));
    }
    if let Some(e) = &edit.cmd {
        c.set_cmd((!e.is_empty()).then(|| e.clone()));
    }
    if !edit.env.is_empty() {
        // Env is an ordered list of K=V: edited in place, new ones last.
        let mut env: Vec<String> = c.env().clone().unwrap_or_default();
        env.retain(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !edit.env.remove.iter().any(|r| r == k)
        });
        for (k, v) in &edit.env.set {
            let line = format!("{k}={v}");
            match env
                .iter_mut()
                .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == k)
            {
                Some(slot) => *slot = line,
                None => env.push(line),
            }
        }
        c.set_env((!env.is_empty()).then_some(env));
    }
    if !edit.labels.is_empty() {
        let mut m: BTreeMap<String, String> =
            c.labels().clone().unwrap_or_default().into_iter().collect();
        edit.labels.apply(&mut m);
        c.set_labels((!m.is_empty()).then(|| m.into_iter().collect::<HashMap<_, _>>()));
    }
    if let Some(u) = &edit.user {
        c.set_user((!u.is_empty()).then(|| u.clone()));
    }
    if let Some(w) = &edit.workdir {
        c.set_working_dir((!w.is_empty()).then(|| w.clone()));
    }
    if !edit.ports.is_empty() {
        let mut ports: Vec<String> = c.exposed_ports().clone().unwrap_or_default();
        let remove: Vec<String> = edit.ports.remove.iter().map(|p| port_key(p)).collect();
        ports.retain(|p| !remove.contains(p));
        for (p, _) in &edit.ports.set {
            let p = port_key(p);
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports.sort();
        c.set_exposed_ports((!ports.is_empty()).then_some(ports));
    }
    if !edit.volumes.is_empty() {
        let mut vols: Vec<String> = c.volumes().clone().unwrap_or_default();
        vols.retain(|v| !edit.volumes.remove.contains(v));
        for (v, _) in &edit.volumes.set {
            if !vols.contains(v) {
                vols.push(v.clone());
            }
        }
        vols.sort();
        c.set_volumes((!vols.is_empty()).then_some(vols));
    }
    if let Some(s) = &edit.stop_signal {
        c.set_stop_signal((!s.is_empty()).then(|| s.clone()));
    }
    out.set_config(Some(c));
    if let Some(a) = &edit.author {
        out.set_author((!a.is_empty()).then(|| a.clone()));
    }
    if let Some(t) = &edit.created {
        out.set_created(Some(t.clone()));
    }
    if let Some(p) = &edit.platform {
        out.set_os(oci_spec::image::Os::from(p.os.as_str()));
        out.set_architecture(oci_spec::image::Arch::from(p.arch.as_str()));
        out.set_variant(p.variant.clone());
    }
    let mut h = History::default();
    h.set_created(out.created().clone());
    h.set_created_by(Some(edit.created_by.clone()));
    h.set_empty_layer(Some(true));
    out.history_mut().get_or_insert_with(Vec::new).push(h);
    out
}

/// Applies the annotation part of `edit` to a manifest's annotations.
pub fn annotations(
    current: Option<&HashMap<String, String>>,
    edit: &ConfigEdit,
) -> Option<HashMap<String, String>> {
    let mut m: BTreeMap<String, String> =
        current.cloned().unwrap_or_default().into_iter().collect();
    edit.annotations.apply(&mut m);
    (!m.is_empty()).then(|| m.into_iter().collect())
}

/// How an image built from a spec says it runs (`[image.NAME]` of a
/// shipyard.toml). Unlike an edit, a declaration states the result: the
/// lists it gives replace the base's, an environment variable it sets
/// moves to the end, labels are added to the base's. What it leaves out
/// (`None`, empty) stays as the base has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Replaces the base's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the base's cmd.
    pub cmd: Option<Vec<String>>,
    /// In order; a variable the base has is replaced and moves last.
    pub env: Vec<(String, String)>,
    /// Replaces the base's working directory.
    pub workdir: Option<String>,
    /// Replaces the base's user (`USER[:GROUP]`, names or ids).
    pub user: Option<String>,
    /// `N[/PROTO]` (`/tcp` when absent); replaces the base's ports.
    pub ports: Vec<String>,
    /// Replaces the base's volumes.
    pub volumes: Vec<String>,
    /// Added to (and overriding) the base's labels.
    pub labels: BTreeMap<String, String>,
    /// Replaces the base's stop signal.
    pub stop_signal: Option<String>,
    /// Replaces the base's author (the config's top-level field).
    pub author: Option<String>,
    /// Replaces the base's health check (`Test: ["NONE"]` disables it).
    pub healthcheck: Option<Healthcheck>,
    /// Replaces the base's ONBUILD triggers (`Some(vec![])` clears them,
    /// as Docker does for an image built on a base that has some).
    pub on_build: Option<Vec<String>>,
}

/// Applies a declaration to a config (a runtime base's, with the build's
/// layers appended); returns the result. No history entry is added: the
/// layers' entries say what the build did.
pub fn declare(config: &ImageConfig, d: &Declared) -> ImageConfig {
    let mut out = config.clone();
    let mut c: Config = out.config().clone().unwrap_or_default();
    if d.entrypoint.is_some() {
        c.set_entrypoint(d.entrypoint.clone());
    }
    if d.cmd.is_some() {
        c.set_cmd(d.cmd.clone());
    }
    if !d.env.is_empty() {
        let mut env: Vec<String> = c.env().clone().unwrap_or_default();
        for (k, v) in &d.env {
            env.retain(|e| e.split('=').next() != Some(k));
            env.push(format!("{k}={v}"));
        }
        c.set_env(Some(env));
    }
    if d.workdir.is_some() {
        c.set_working_dir(d.workdir.clone());
    }
    if d.user.is_some() {
        c.set_user(d.user.clone());
    }
    if !d.ports.is_empty() {
        c.set_exposed_ports(Some(d.ports.iter().map(|p| port_key(p)).collect()));
    }
    if !d.volumes.is_empty() {
        c.set_volumes(Some(d.volumes.clone()));
    }
    if !d.labels.is_empty() {
        let mut l: HashMap<String, String> = c.labels().clone().unwrap_or_default();
        l.extend(d.labels.clone());
        c.set_labels(Some(l));
    }
    if d.stop_signal.is_some() {
        c.set_stop_signal(d.stop_signal.clone());
    }
    if d.author.is_some() {
        out.set_author(d.author.clone());
    }
    out.set_config(Some(c));
    if d.healthcheck.is_some() {
        out.healthcheck = d.healthcheck.clone();
    }
    if let Some(o) = &d.on_build {
        out.on_build = o.clone();
    }
    out
}

/// The manifest of an image: its config, its layers (base first) and
/// its annotations (none when empty).
pub fn manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Result<ImageManifest, oci_spec::OciSpecError> {
    let mut m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()?;
    if !annotations.is_empty() {
        m.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ImageConfig {
        let mut c = crate::oci::image::empty_config();
        let mut cfg = Config::default();
        cfg.set_env(Some(vec!["PATH=/bin".into(), "A=1".into()]));
        cfg.set_entrypoint(Some(vec!["/old".into()]));
        cfg.set_exposed_ports(Some(vec!["80/tcp".into()]));
        c.set_config(Some(cfg));
        c
    }

    #[test]
    fn env_is_edited_in_place_and_new_keys_go_last() {
        let edit = ConfigEdit {
            env: MapEdit {
                set: vec![("A".into(), "2".into()), ("B".into(), "x=y".into())],
                remove: vec!["PATH".into()],
            },
            created_by: "test".into(),
            ..Default::default()
        };
        let out = edit_config(&base(), &edit);
        let env = out.config().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["A=2", "B=x=y"]);
    }

    #[test]
    fn empty_values_clear_and_absent_ones_keep() {
        let edit = ConfigEdit {
            entrypoint: Some(vec![]),
            cmd: Some(vec!["serve".into()]),
            ports: MapEdit {
                set: vec![("8080".into(), String::new())],
                remove: vec!["80".into()],
            },
            created_by: "test".into(),
            ..Default::default()
        };
        let before = base();
        let out = edit_config(&before, &edit);
        let c = out.config().as_ref().unwrap();
        assert_eq!(c.entrypoint(), &None);
        assert_eq!(c.cmd().as_deref(), Some(&["serve".to_string()][..]));
        assert_eq!(
            c.exposed_ports().as_deref(),
            Some(&["8080/tcp".to_string()][..])
        );
        assert_eq!(c.env(), before.config().as_ref().unwrap().env());
        // The edit is recorded, and the original is untouched.
        let h = out.history().as_ref().unwrap().last().unwrap();
        assert_eq!(h.empty_layer(), Some(true));
        assert_eq!(
            before.config().as_ref().unwrap().entrypoint().as_deref(),
            Some(&["/old".to_string()][..])
        );
    }

    #[test]
    fn annotations_set_and_remove() {
        let mut cur = HashMap::new();
        cur.insert("a".to_string(), "1".to_string());
        let edit = ConfigEdit {
            annotations: MapEdit {
                set: vec![("b".into(), "2".into())],
                remove: vec!["a".into()],
            },
            ..Default::default()
        };
        let out = annotations(Some(&cur), &edit).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out["b"], "2");
    }

    #[test]
    fn a_declaration_replaces_lists_and_moves_a_set_variable_last() {
        let mut before = base();
        let mut cfg = before.config().clone().unwrap();
        let mut labels = HashMap::new();
        labels.insert("a".to_string(), "1".to_string());
        cfg.set_labels(Some(labels));
        before.set_config(Some(cfg));
        let d = Declared {
            env: vec![("PATH".into(), "/usr/bin".into())],
            ports: vec!["8080".into(), "53/udp".into()],
            labels: [("b".to_string(), "2".to_string())].into(),
            cmd: Some(vec![]),
            ..Default::default()
        };
        let out = declare(&before, &d);
        let c = out.config().as_ref().unwrap();
        assert_eq!(c.env().clone().unwrap(), ["A=1", "PATH=/usr/bin"]);
        assert_eq!(c.exposed_ports().clone().unwrap(), ["8080/tcp", "53/udp"]);
        assert_eq!(c.labels().as_ref().unwrap().len(), 2);
        // Declared, even empty, is what the image says; left out stays.
        assert_eq!(c.cmd().as_deref(), Some(&[][..]));
        assert_eq!(c.entrypoint().as_deref(), Some(&["/old".to_string()][..]));
        assert_eq!(out.history(), before.history());
    }

    #[test]
    fn a_manifest_has_annotations_only_when_given() {
        let d = Descriptor::new(
            MediaType::ImageConfig,
            2,
            crate::oci::media::to_spec_digest(&crate::oci::digest::Digest::of(b"{}")),
        );
        let m = manifest(d.clone(), vec![], &BTreeMap::new()).unwrap();
        assert_eq!(m.annotations(), &None);
        let ann: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let m = manifest(d, vec![], &ann).unwrap();
        assert_eq!(m.annotations().as_ref().unwrap()["k"], "v");
    }
}
