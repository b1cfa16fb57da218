//! The image side of the executor: each image is its runtime base, a
//! layer per group of tapeouts and its declared config, written and
//! tagged into the output layout; then the pods. Layers the cache holds
//! are linked from it; the others are made from the staged tapeouts and
//! stored. What a config becomes is decided by pure functions beside the
//! image type ([`shipyard_image::oci::mutate`]).

use super::error::{BuildError, Doing};
use super::events::Event;
use super::executor::{Executor, RuntimeBase};
use super::schedule::{ImagePlan, LayerPlan, Schedule, Status};
use super::stepcache::{Record, RecordKind, StepCache};
use super::{Built, CACHE_COMPRESSION, CACHE_LEVEL};
use crate::project::ImageSpec;
use crate::tapeout::onto::Move;
use crate::tapeout::Explain;
use oci_spec::image::{Descriptor, MediaType};
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::image::{append_layer, empty_config, rfc3339};
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media::digest_of;
use shipyard_image::oci::mutate;
use shipyard_image::rootfs::changeset::Change;
use shipyard_image::rootfs::entry::{Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk_with, Hashing, WalkOptions};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

type Result<T, E = BuildError> = std::result::Result<T, E>;

/// An image written: its digest and why each path is in it.
struct Assembled {
    digest: String,
    lines: Vec<(String, String)>,
}

impl Executor<'_> {
    /// Writes every scheduled image; returns them and their descriptors
    /// (for the pods).
    pub(super) fn write_images(
        &self,
        schedule: &Schedule,
        bases: Vec<RuntimeBase>,
        layout: &Layout,
        explain: &BTreeMap<String, Explain>,
        sboms: &BTreeMap<String, crate::sbom::Attribution>,
    ) -> Result<(Vec<Built>, BTreeMap<String, Descriptor>)> {
        let mut built = Vec::new();
        let mut descriptors = BTreeMap::new();
        for (img, base) in schedule.images.iter().zip(bases) {
            let spec = &self.plan.images[img.index];
            let made = self.assemble(spec, img, base.as_ref(), layout, explain)?;
            let desc = layout
                .resolve(Some(&spec.tag))
                .doing(|| format!("image.{}: reading its tag back", spec.name))?;
            if self.opts.sbom {
                let parts: Vec<&crate::sbom::Attribution> =
                    spec.tapeouts.iter().filter_map(|t| sboms.get(t)).collect();
                crate::sbom::build::attach(layout, &spec.name, &desc, &parts, self.opts.epoch)
                    .doing(|| format!("image.{}: --sbom", spec.name))?;
            }
            descriptors.insert(spec.name.clone(), desc);
            for (path, why) in &made.lines {
                let image = &spec.name;
                self.events.event(Event::Explain { image, path, why });
            }
            built.push(Built {
                name: spec.name.clone(),
                tag: spec.tag.clone(),
                digest: made.digest,
                pod: false,
            });
        }
        Ok((built, descriptors))
    }

    /// Writes every scheduled pod.
    pub(super) fn write_pods(
        &self,
        schedule: &Schedule,
        layout: &Layout,
        descriptors: &BTreeMap<String, Descriptor>,
    ) -> Result<Vec<Built>> {
        let mut built = Vec::new();
        for &i in &schedule.pods {
            let p = &self.plan.pods[i];
            self.events.event(Event::Pod(&p.name));
            let stage = |t: &str| self.stage(t);
            let input = crate::pod::bundle::Input {
                spec: p,
                spec_dir: &self.plan.dir,
                built: descriptors,
                tapeout_stage: &stage,
                epoch: self.opts.epoch,
                compression: self.opts.compression,
                level: self.opts.level,
            };
            let d = crate::pod::bundle::write(layout, &input, self.state, &self.opts.transport)
                .doing(|| format!("writing pod {}", p.name))?;
            built.push(Built {
                name: p.name.clone(),
                tag: format!("{}:{}", p.name, p.version),
                digest: d.digest().to_string(),
                pod: true,
            });
        }
        Ok(built)
    }

    /// Runtime base + tapeout layer(s) + config, written and tagged.
    fn assemble(
        &self,
        spec: &ImageSpec,
        img: &ImagePlan,
        base: Option<&(Layout, shipyard_image::oci::image::Image)>,
        layout: &Layout,
        explain: &BTreeMap<String, Explain>,
    ) -> Result<Assembled> {
        let what = || format!("image.{}", spec.name);
        let (mut config, mut layers) = match base {
            None => (empty_config(), Vec::new()),
            Some((blayout, bimage)) => {
                bimage.copy_layers(blayout, layout).doing(what)?;
                (bimage.config.clone(), bimage.manifest.layers().clone())
            }
        };
        let mut base_manifest: Option<Manifest> = None;
        let mut lines = Vec::new();
        for (i, layer) in img.layers.iter().enumerate() {
            let at = LayerAt { spec, i };
            let rec = match layer.rule {
                None if !layer.squash.is_empty() => {
                    let under = under_layers(&layers, &config).doing(what)?;
                    let base_manifest = at.base_manifest(layout, &under)?;
                    self.squash_layer(&at, layer, &base_manifest, layout)?
                }
                Some(rule) => {
                    // What the tapeouts after it are made against changes.
                    base_manifest = None;
                    self.rule_layer(&at, layer, rule, layout)?
                }
                None => {
                    if base_manifest.is_none() {
                        let under = under_layers(&layers, &config).doing(what)?;
                        base_manifest = Some(at.base_manifest(layout, &under)?);
                    }
                    let empty = Manifest::default();
                    let under = base_manifest.as_ref().unwrap_or(&empty);
                    self.image_layer(&at, layer, under, layout, explain)?
                }
            };
            self.cache
                .sc
                .remember_parts(&self.plan.dir, &at.step(), &layer.key);
            lines.extend(rec.explain.clone());
            if !layer.squash.is_empty()
                && shipyard_image::layer::merge::is_empty_layer(&rec.diff_id)
            {
                // The build changed nothing: no layer, as Docker's --squash.
                continue;
            }
            let by: Vec<String> = match layer.rule {
                Some((b, s)) => vec![self.plan.builders[b].steps[s].id()],
                None if !layer.squash.is_empty() => (layer.squash.iter())
                    .map(|&(b, s)| self.plan.builders[b].steps[s].id())
                    .collect(),
                None => layer
                    .tapeouts
                    .iter()
                    .map(|t| format!("tapeout.{t}"))
                    .collect(),
            };
            let diff_id: Digest = rec.diff_id.parse().doing(what)?;
            let created_by = format!("shipyard build: {}", by.join(" "));
            append_layer(
                &mut config,
                &diff_id,
                &rfc3339(self.opts.epoch),
                &created_by,
            );
            layers.push(rec.layer.clone());
        }
        let mut declared = declared(spec);
        if spec.default_path && !has_path(&config) && !spec.env.iter().any(|(k, _)| k == "PATH") {
            declared.env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
        let config = mutate::declare(&config, &declared);
        let config_desc = layout
            .put_json(&config, MediaType::ImageConfig)
            .doing(what)?;
        let manifest = mutate::manifest(config_desc, layers, &spec.annotations).doing(what)?;
        let desc = layout
            .put_json(&manifest, MediaType::ImageManifest)
            .doing(what)?;
        layout.tag(&spec.tag, &desc).doing(what)?;
        Ok(Assembled {
            digest: desc.digest().to_string(),
            lines,
        })
    }

    /// One layer of an image: linked from the cache, or made and stored.
    fn image_layer(
        &self,
        at: &LayerAt<'_>,
        layer: &LayerPlan,
        base: &Manifest,
        layout: &Layout,
        explain: &BTreeMap<String, Explain>,
    ) -> Result<Record> {
        let label = format!("image.{} layer {}", at.spec.name, at.i + 1);
        let sc = &self.cache.sc;
        let step = at.step();
        match &layer.status {
            Status::Hit(r) => {
                let d = digest_of(&r.layer).doing(|| step.clone())?;
                layout
                    .link_blob_from(&sc.cache.layout, &d)
                    .doing(|| step.clone())?;
                self.events.event(Event::Step {
                    step: &label,
                    status: "cached",
                    why: "",
                });
                Ok((**r).clone())
            }
            Status::Miss(why) => {
                self.events.event(Event::Step {
                    step: &label,
                    status: "make",
                    why,
                });
                let rec =
                    self.make_layer(&layer.tapeouts, &at.merged_name(), base, layout, explain)?;
                let d = digest_of(&rec.layer).doing(|| step.clone())?;
                sc.cache
                    .layout
                    .link_blob_from(layout, &d)
                    .doing(|| step.clone())?;
                sc.store(
                    &layer.key.key,
                    &Record {
                        step,
                        ..rec.clone()
                    },
                )?;
                Ok(rec)
            }
        }
    }

    /// A layer of a builder image: what one rule changed, as captured
    /// into the step cache, rewritten with the image's compression and
    /// its mtimes clamped to the build's epoch (so the image is the same
    /// whenever it is built); linked from the cache when made before.
    fn rule_layer(
        &self,
        at: &LayerAt<'_>,
        layer: &LayerPlan,
        (b, s): (usize, usize),
        layout: &Layout,
    ) -> Result<Record> {
        let rule = self.plan.builders[b].steps[s].id();
        let label = format!("image.{} layer {} ({rule})", at.spec.name, at.i + 1);
        let sc = &self.cache.sc;
        let step = at.step();
        if let Status::Hit(r) = &layer.status {
            let d = digest_of(&r.layer).doing(|| step.clone())?;
            layout
                .link_blob_from(&sc.cache.layout, &d)
                .doing(|| step.clone())?;
            self.say(&label, "cached", "");
            return Ok((**r).clone());
        }
        if let Status::Miss(why) = &layer.status {
            self.say(&label, "make", why);
        }
        let parts = layer.key.parts.get("rule").cloned().unwrap_or_default();
        let captured = parts
            .parse()
            .ok()
            .and_then(|k| sc.lookup(&k))
            .ok_or_else(|| BuildError::NoState {
                what: format!("image.{}", at.spec.name),
                rule: rule.clone(),
                why: self.no_state_why(),
            })?;
        let skip = mount_points(self.plan, b, &self.plan.builders[b].steps[s]);
        let how = shipyard_image::layer::Rewrite {
            compression: self.opts.compression,
            level: self.opts.level,
            tar: TarOptions {
                clamp_mtime: Some(self.opts.epoch),
            },
            overlay_upper: true,
            skip: &skip,
        };
        let out = shipyard_image::layer::rewrite_layer(
            &sc.cache.layout,
            &captured.layer,
            &captured.diff_id,
            layout,
            &how,
        )
        .doing(|| format!("{step}: making a layer of what {rule} changed"))?;
        let rec = Record::new(
            RecordKind::Layer,
            &step,
            out.descriptor,
            out.diff_id.to_string(),
        );
        let d = digest_of(&rec.layer).doing(|| step.clone())?;
        sc.cache
            .layout
            .link_blob_from(layout, &d)
            .doing(|| step.clone())?;
        sc.store(&layer.key.key, &rec)?;
        Ok(rec)
    }

    /// The one layer of a squashed builder image (`--squash`): the
    /// rules' captured changes merged into one layer over the runtime
    /// base, made in the cache's layout and stored there (linked into
    /// the image's layout only when not empty, as an empty one is left
    /// out of the image).
    fn squash_layer(
        &self,
        at: &LayerAt<'_>,
        layer: &LayerPlan,
        base: &Manifest,
        layout: &Layout,
    ) -> Result<Record> {
        let label = format!("image.{} layer {} (squashed)", at.spec.name, at.i + 1);
        let sc = &self.cache.sc;
        let step = at.step();
        let link = |rec: &Record| -> Result<()> {
            if !shipyard_image::layer::merge::is_empty_layer(&rec.diff_id) {
                let d = digest_of(&rec.layer).doing(|| step.clone())?;
                layout
                    .link_blob_from(&sc.cache.layout, &d)
                    .doing(|| step.clone())?;
            }
            Ok(())
        };
        if let Status::Hit(r) = &layer.status {
            link(r)?;
            self.say(&label, "cached", "");
            return Ok((**r).clone());
        }
        if let Status::Miss(why) = &layer.status {
            self.say(&label, "make", why);
        }
        // The rules' keys, in order, as the layer's key holds them.
        let keys = layer.key.parts.get("rules").cloned().unwrap_or_default();
        let keys: Vec<&str> = keys.split(',').collect();
        let mut captured = Vec::new();
        for (n, &(b, s)) in layer.squash.iter().enumerate() {
            let builder = &self.plan.builders[b];
            let rec = (keys.get(n))
                .and_then(|k| k.parse().ok())
                .and_then(|k| sc.lookup(&k))
                .ok_or_else(|| BuildError::NoState {
                    what: format!("image.{}", at.spec.name),
                    rule: builder.steps[s].id(),
                    why: self.no_state_why(),
                })?;
            captured.push((rec, mount_points(self.plan, b, &builder.steps[s])));
        }
        let parts: Vec<shipyard_image::layer::merge::Part<'_>> = (captured.iter())
            .map(|(rec, skip)| shipyard_image::layer::merge::Part {
                desc: &rec.layer,
                diff_id: &rec.diff_id,
                skip,
            })
            .collect();
        let how = shipyard_image::layer::merge::Merge {
            compression: self.opts.compression,
            level: self.opts.level,
            tar: TarOptions {
                clamp_mtime: Some(self.opts.epoch),
            },
            overlay_upper: true,
            base,
        };
        let out = shipyard_image::layer::merge::merge_layers(
            &sc.cache.layout,
            &parts,
            &sc.cache.layout,
            &how,
        )
        .doing(|| format!("{step}: merging what the build changed into one layer"))?;
        let rec = Record::new(
            RecordKind::Layer,
            &step,
            out.descriptor,
            out.diff_id.to_string(),
        );
        sc.store(&layer.key.key, &rec)?;
        link(&rec)?;
        Ok(rec)
    }

    /// One image layer from staged tapeouts, diffed against the runtime
    /// base: a tapeout only adds, so what the base has and the builder
    /// did not select stays.
    fn make_layer(
        &self,
        group: &[String],
        merged_name: &str,
        base_manifest: &Manifest,
        layout: &Layout,
        explain: &BTreeMap<String, Explain>,
    ) -> Result<Record> {
        let what = || format!("making the layer {merged_name}");
        let (tree, walked, moves) = self.layer_tree(group, merged_name, base_manifest)?;
        let mut d = shipyard_image::rootfs::diff::diff(&walked, base_manifest).doing(what)?;
        d.changes.changes.retain(|c| matches!(c, Change::Put(_)));
        let tar = TarOptions {
            clamp_mtime: Some(self.opts.epoch),
        };
        let (compression, level) = (self.opts.compression, self.opts.level);
        let out =
            shipyard_image::layer::write_layer(layout, &d.changes, &tree, compression, level, &tar)
                .doing(what)?;
        let diff_id = out.diff_id.to_string();
        let mut rec = Record::new(RecordKind::Layer, merged_name, out.descriptor, diff_id);
        let in_layer: HashSet<&RelPath> = (d.changes.changes.iter())
            .filter_map(|c| match c {
                Change::Put(e) => Some(&e.path),
                _ => None,
            })
            .collect();
        for t in group {
            for (p, why) in explain.get(t).into_iter().flatten() {
                let (path, line) = explain_line(p, why, &moves, &in_layer, base_manifest);
                rec.explain.insert(path, line);
            }
        }
        Ok(rec)
    }

    /// The tree a layer is made of: the group's stages merged, then
    /// placed where the runtime base's symlinks lead (usrmerge), so the
    /// layer never replaces the base's /lib -> usr/lib. Returns it walked,
    /// with the moves made.
    fn layer_tree(
        &self,
        group: &[String],
        merged_name: &str,
        base_manifest: &Manifest,
    ) -> Result<(
        PathBuf,
        shipyard_image::rootfs::walk::Tree,
        BTreeMap<RelPath, Move>,
    )> {
        let what = || format!("making the layer {merged_name}");
        let tree = if let [only] = group {
            self.stage(only)
        } else {
            let merged = self.state.join("image").join(merged_name);
            let stages: Vec<PathBuf> = group.iter().map(|t| self.stage(t)).collect();
            crate::tapeout::stage::merge_stages(&stages, &merged).doing(what)?;
            merged
        };
        std::fs::create_dir_all(&tree).doing(what)?;
        let walked = walk_with(&tree, &WalkOptions::new(Hashing::None)).doing(what)?;
        if !crate::tapeout::onto::needed(base_manifest) {
            return Ok((tree, walked, BTreeMap::new()));
        }
        let plan = crate::tapeout::onto::plan(&walked.manifest, base_manifest);
        let placed = self.state.join("image").join(format!("{merged_name}.onto"));
        if placed.exists() {
            crate::sandbox::remove_tree(&placed)?;
        }
        crate::tapeout::onto::materialize(&tree, &walked.manifest, base_manifest, &plan, &placed)
            .doing(|| format!("placing {} onto the runtime base", tree.display()))?;
        let walked = walk_with(&placed, &WalkOptions::new(Hashing::None)).doing(what)?;
        let moves = plan.into_iter().map(|m| (m.from.clone(), m)).collect();
        Ok((placed, walked, moves))
    }
}

/// Which layer of which image, for names and messages.
struct LayerAt<'a> {
    spec: &'a ImageSpec,
    i: usize,
}

impl LayerAt<'_> {
    /// The step the cache and `--explain` know it by.
    fn step(&self) -> String {
        format!("image.{}#{}", self.spec.name, self.i)
    }

    fn merged_name(&self) -> String {
        format!("{}-{}", self.spec.name, self.i)
    }

    /// What the image holds under this layer (empty on scratch): the
    /// runtime base, and the rules' layers of a builder image, all of
    /// them already in `layout`.
    fn base_manifest(&self, layout: &Layout, under: &[(Descriptor, String)]) -> Result<Manifest> {
        if under.is_empty() {
            return Ok(Manifest::default());
        }
        shipyard_image::layer::from_image::manifest_of_layers(layout, under)
            .doing(|| format!("reading runtime base {}", self.spec.from))
    }
}

/// Where a selected path ends up in the image and why it is (or is not)
/// there: moved through the base's symlinks, left out because the base
/// has the same, or shadowing the base's own.
fn explain_line(
    p: &Path,
    why: &str,
    moves: &BTreeMap<RelPath, Move>,
    in_layer: &HashSet<&RelPath>,
    base: &Manifest,
) -> (String, String) {
    let bytes = p
        .strip_prefix("/")
        .unwrap_or(p)
        .as_os_str()
        .as_encoded_bytes();
    let from = RelPath::new(bytes.to_vec());
    let mv = moves.get(&from);
    let Some(to) = mv.map_or(Some(&from), |m| m.to.as_ref()) else {
        let note = mv.and_then(|m| m.note.clone()).unwrap_or_default();
        return (p.display().to_string(), format!("{why}; {note}"));
    };
    let mut line = why.to_string();
    if let Some(note) = mv.and_then(|m| m.note.as_ref()) {
        line = format!("{line}; {note}");
    }
    match (in_layer.contains(to), base.get(to).map(|e| e.kind)) {
        (false, Some(_)) => line = format!("{line}; left out: the runtime base has the same"),
        (true, Some(k)) if k != Kind::Dir => {
            line = format!("{line}; shadows the runtime base's {to}")
        }
        _ => {}
    }
    (to.to_string(), line)
}

/// Where a rule's sandbox mounted something (sources, tapeouts, cache
/// mounts, tmpfs mounts, secrets): the directories made for that are not what the rule
/// changed, and an image of the builder leaves them out, as BuildKit does
/// for `RUN --mount` targets.
fn mount_points(
    plan: &crate::project::Plan,
    b: usize,
    step: &crate::project::Step,
) -> Vec<RelPath> {
    let crate::project::Step::Build(rule) = step else {
        return Vec::new();
    };
    let builder = &plan.builders[b];
    let mut targets: Vec<&Path> = builder.sources.iter().map(|s| s.target.as_path()).collect();
    targets.extend(rule.mounts.iter().map(|m| m.target.as_path()));
    targets.extend(rule.cache.iter().map(|c| c.target.as_path()));
    targets.extend(rule.tmpfs.iter().map(|t| t.target.as_path()));
    targets.extend(rule.binds.iter().map(|c| c.target.as_path()));
    if !rule.secrets.is_empty() {
        targets.push(Path::new(crate::sandbox::job::Secret::DIR));
    }
    targets.extend(
        super::schedule::network_stubs(plan, b, rule)
            .iter()
            .map(Path::new),
    );
    targets
        .into_iter()
        .map(|t| {
            let rel = t.strip_prefix("/").unwrap_or(t);
            RelPath::new(rel.as_os_str().as_encoded_bytes().to_vec())
        })
        .collect()
}

/// The layers an image has so far (the runtime base's, copied, and
/// those appended), with their diff_ids from the config.
fn under_layers(
    layers: &[Descriptor],
    config: &oci_spec::image::ImageConfiguration,
) -> Result<Vec<(Descriptor, String)>, String> {
    let ids = config.rootfs().diff_ids();
    if ids.len() != layers.len() {
        return Err(format!(
            "the config lists {} layers and the manifest {}",
            ids.len(),
            layers.len()
        ));
    }
    Ok(layers.iter().cloned().zip(ids.iter().cloned()).collect())
}

/// The `PATH` Docker and BuildKit give an image that has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether a config's environment sets `PATH`.
fn has_path(config: &oci_spec::image::ImageConfiguration) -> bool {
    (config.config().as_ref())
        .and_then(|c| c.env().as_ref())
        .is_some_and(|env| env.iter().any(|e| e.starts_with("PATH=")))
}

/// What an image declares about how it runs.
fn declared(spec: &ImageSpec) -> mutate::Declared {
    mutate::Declared {
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        ports: spec.ports.clone(),
        volumes: spec.volumes.clone(),
        labels: spec.labels.clone(),
        stop_signal: spec.stop_signal.clone(),
        author: spec.author.clone(),
        healthcheck: spec.healthcheck.clone(),
        on_build: Some(spec.on_build.clone()),
    }
}

/// Stores a staged tapeout (with its ownership record) as a layer in the
/// cache.
pub(super) fn store_stage(
    sc: &StepCache,
    step: &str,
    stage: &Path,
    explain: BTreeMap<String, String>,
) -> Result<Record, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(stage)?;
    let walked = walk_with(stage, &WalkOptions::new(Hashing::None))?;
    let d = shipyard_image::rootfs::diff::diff(&walked, &Manifest::default())?;
    let out = shipyard_image::layer::write_layer(
        &sc.cache.layout,
        &d.changes,
        stage,
        CACHE_COMPRESSION,
        Some(CACHE_LEVEL),
        &TarOptions { clamp_mtime: None },
    )?;
    let diff_id = out.diff_id.to_string();
    let mut rec = Record::new(RecordKind::Tapeout, step, out.descriptor, diff_id);
    rec.explain = explain;
    Ok(rec)
}
