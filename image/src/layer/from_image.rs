//! The manifest of an image, read from its layers' tar headers without
//! unpacking anything: each layer's entries applied on top of the previous
//! ones, whiteouts and opaque directories included.

use crate::layer::read::TarItem;
use crate::layer::LayerError;
use crate::oci::digest::sha256_reader;
use crate::oci::image::Image;
use crate::oci::layout::Layout;
use crate::rootfs::entry::{Entry, Kind, RelPath};
use crate::rootfs::manifest::Manifest;
use oci_spec::image::Descriptor;
use std::collections::HashSet;

/// Applies layer items to a manifest the way a runtime stacks layers.
/// Shared by [`manifest_of_image`] and the extractor, so what shipyard
/// unpacks and what it says an image holds are the same thing.
#[derive(Default)]
pub(crate) struct Stacker {
    pub manifest: Manifest,
    this_layer: HashSet<RelPath>,
}

impl Stacker {
    pub(crate) fn start_layer(&mut self) {
        self.this_layer.clear();
    }

    /// Whether `p` was written by the current layer (opaque markers spare
    /// those).
    pub(crate) fn in_this_layer(&self, p: &RelPath) -> bool {
        self.this_layer.contains(p)
    }

    /// Applies one member. Its parent directories are resolved through
    /// the symlinks the manifest holds, inside the root (see
    /// [`crate::layer::resolve`]), so the manifest records where a member
    /// lands, as the extractor puts it. A path that cannot resolve (a
    /// loop, a file as a parent) is kept as written: the extractor refuses
    /// such a layer.
    pub fn apply(&mut self, item: &TarItem) {
        use crate::layer::resolve::{resolve_dir_in_manifest, resolve_in_manifest};
        let m = &self.manifest;
        let member = |p: &RelPath| resolve_in_manifest(m, p).unwrap_or_else(|_| p.clone());
        let resolved;
        let item = match item {
            TarItem::Whiteout(p) => {
                resolved = TarItem::Whiteout(member(p));
                &resolved
            }
            TarItem::Opaque(d) => {
                resolved =
                    TarItem::Opaque(resolve_dir_in_manifest(m, d).unwrap_or_else(|_| d.clone()));
                &resolved
            }
            TarItem::Entry(e) if !e.path.is_root() => {
                let path = member(&e.path);
                let link = match (&e.kind, &e.link) {
                    (Kind::Hardlink, Some(l)) => {
                        Some(member(&RelPath::new(l.clone())).as_bytes().to_vec())
                    }
                    _ => e.link.clone(),
                };
                if path == e.path && link == e.link {
                    item
                } else {
                    let mut e = e.clone();
                    e.path = path;
                    e.link = link;
                    resolved = TarItem::Entry(e);
                    &resolved
                }
            }
            other => other,
        };
        match item {
            TarItem::Skip => {}
            TarItem::Whiteout(p) => self.manifest.remove_tree(p),
            TarItem::Opaque(dir) => {
                let doomed: Vec<RelPath> = self
                    .manifest
                    .children_of(dir)
                    .map(|e| e.path.clone())
                    .filter(|p| !self.this_layer.contains(p))
                    .collect();
                for p in doomed {
                    self.manifest.entries.remove(&p);
                }
                self.ensure_parents(&dir.join(b"x"));
            }
            TarItem::Entry(e) => {
                if e.path.is_root() {
                    return;
                }
                self.ensure_parents(&e.path);
                let replaces_dir = self
                    .manifest
                    .get(&e.path)
                    .is_some_and(|old| old.kind == Kind::Dir && e.kind != Kind::Dir);
                if replaces_dir {
                    self.manifest.remove_tree(&e.path);
                }
                self.this_layer.insert(e.path.clone());
                self.manifest.insert(e.clone());
            }
        }
    }

    /// Layers may omit parent directories; runtimes create them 0755 root.
    fn ensure_parents(&mut self, p: &RelPath) {
        let mut parent = p.parent();
        let mut missing = Vec::new();
        while !parent.is_root() && self.manifest.get(&parent).is_none() {
            missing.push(parent.clone());
            parent = parent.parent();
        }
        for d in missing {
            let mut e = Entry::new(d, Kind::Dir);
            e.mode = 0o755;
            self.this_layer.insert(e.path.clone());
            self.manifest.insert(e);
        }
    }
}

/// Reads every layer of `image` (verifying digests and diff_ids) and returns
/// the manifest of the resulting tree, with sha256 for every regular file.
pub fn manifest_of_image(layout: &Layout, image: &Image) -> Result<Manifest, LayerError> {
    manifest_of_layers(layout, &image.layers())
}

/// The tree a stack of layers of `layout` makes, bottom first, each given
/// with its diff_id; as [`manifest_of_image`].
pub fn manifest_of_layers(
    layout: &Layout,
    layers: &[(Descriptor, String)],
) -> Result<Manifest, LayerError> {
    let mut st = Stacker::default();
    for (desc, diff_id) in layers {
        st.start_layer();
        crate::layer::for_each_member(layout, desc, diff_id, |item, data| {
            if let TarItem::Entry(e) = item {
                if e.kind == Kind::File {
                    e.sha256 = Some(sha256_reader(data)?);
                }
            }
            st.apply(item);
            Ok(())
        })?;
    }
    Ok(st.manifest)
}
