//! Several layers merged into one: what `build --squash` makes of a
//! builder's per-rule layers. Applying the merged layer on the base gives
//! the same tree as applying the layers one after the other, and it holds
//! nothing the result does not need: a file a later layer replaced, or
//! one created and deleted again, leaves no trace; a deletion stays (as a
//! `.wh.` marker) only where the base has something to delete.
//!
//! One direction: layers in, one layer out. Contents are spooled to an
//! unnamed temporary file beside the output blobs (a layer may hold more
//! than memory does); only headers are held.

use super::generate::{self, Content, TarOptions};
use super::read::TarItem;
use super::{for_each_member, is_overlay_whiteout, take_overlay_opaque, LayerError, LayerOutput};
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::media;
use crate::rootfs::changeset::Change;
use crate::rootfs::entry::{Entry, Kind, RelPath};
use crate::rootfs::manifest::Manifest;
use oci_spec::image::Descriptor;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// One layer to merge, oldest first.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// The blob, in the `from` layout.
    pub desc: &'a Descriptor,
    /// Its diff_id, checked as it is read.
    pub diff_id: &'a str,
    /// Entries left out (the mount points the rule's sandbox made).
    pub skip: &'a [RelPath],
}

/// How [`merge_layers`] writes the merged layer.
#[derive(Debug, Clone)]
pub struct Merge<'a> {
    /// The new blob's compression.
    pub compression: super::compress::Compression,
    /// Its level (else the compression's default).
    pub level: Option<i32>,
    /// Header options (mtimes clamped to the epoch).
    pub tar: TarOptions,
    /// The parts are overlayfs upper directories as archived (see
    /// [`super::Rewrite::overlay_upper`]).
    pub overlay_upper: bool,
    /// What the merged layer is applied on: a deletion or an opaque
    /// directory is kept only where this has something it hides.
    pub base: &'a Manifest,
}

/// What a path is after the layers merged so far.
#[derive(Debug)]
enum Node {
    /// A directory. `entry` is `None` when a layer made it opaque without
    /// a header of its own; `hides` when what lower layers hold under it
    /// must be hidden (it was deleted, replaced or made opaque).
    Dir { entry: Option<Entry>, hides: bool },
    /// A regular file: an index into the spooled contents.
    File(usize),
    /// A hard link to the content of a spooled file (the same inode).
    Link(usize),
    /// A symlink, device or fifo.
    Other(Entry),
    /// Deleted.
    Gone,
}

/// One member of a part, as it is applied.
enum Op {
    Whiteout(RelPath),
    Opaque(RelPath),
    Put(Entry),
    /// A spooled file: index into `files`.
    File(RelPath, usize),
    Link(RelPath, RelPath),
}

/// The merge state: the tree the parts made so far, above the base.
struct Merged {
    nodes: BTreeMap<RelPath, Node>,
    /// Every file any part held: its header and where its bytes are in
    /// the spool. A file a later part replaced stays here, as a hard link
    /// made before may still name its content.
    files: Vec<(Entry, u64)>,
}

impl Merged {
    /// Forgets what the parts made under `p` (not `p` itself).
    fn clear_below(&mut self, p: &RelPath) {
        let below: Vec<RelPath> = (self.nodes.range(p.clone()..))
            .skip_while(|(k, _)| *k == p)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    fn apply(&mut self, op: Op, layer: &Digest) -> Result<(), LayerError> {
        match op {
            Op::Whiteout(p) => {
                self.clear_below(&p);
                self.nodes.insert(p, Node::Gone);
            }
            Op::Opaque(d) => {
                self.clear_below(&d);
                let entry = match self.nodes.remove(&d) {
                    Some(Node::Dir { entry, .. }) => entry,
                    _ => None,
                };
                self.nodes.insert(d, Node::Dir { entry, hides: true });
            }
            Op::Put(e) if e.kind == Kind::Dir => {
                // A directory over one the parts left keeps what that one
                // hid; over anything else it replaces, what lower layers
                // had there is hidden. Over nothing, it merges with them.
                let hides = match self.nodes.get(&e.path) {
                    None => false,
                    Some(Node::Dir { hides, .. }) => *hides,
                    Some(_) => true,
                };
                let p = e.path.clone();
                self.nodes.insert(
                    p,
                    Node::Dir {
                        entry: Some(e),
                        hides,
                    },
                );
            }
            Op::Put(e) => {
                self.clear_below(&e.path);
                self.nodes.insert(e.path.clone(), Node::Other(e));
            }
            Op::File(p, i) => {
                self.clear_below(&p);
                self.nodes.insert(p, Node::File(i));
            }
            Op::Link(p, target) => {
                let i = match self.nodes.get(&target) {
                    Some(Node::File(i) | Node::Link(i)) => *i,
                    _ => {
                        return Err(LayerError::Entry {
                            layer: layer.clone(),
                            path: p.to_string(),
                            source: "a hard link to a file the layer does not hold".into(),
                        })
                    }
                };
                self.clear_below(&p);
                self.nodes.insert(p, Node::Link(i));
            }
        }
        Ok(())
    }

    /// Directories the parts hold only because something was made in
    /// them (overlayfs copies a directory up to write in it): the base
    /// has the directory with the same mode, owner and xattrs, and
    /// nothing under it is in the merged layer. Their mtime alone is not
    /// a change worth a layer; a squash that left only them adds none.
    fn unchanged_dirs(&self, base: &Manifest) -> std::collections::HashSet<RelPath> {
        let same_as_base = |p: &RelPath, e: &Entry| {
            base.get(p).is_some_and(|b| {
                b.kind == Kind::Dir
                    && b.mode == e.mode
                    && b.uid == e.uid
                    && b.gid == e.gid
                    && b.xattrs == e.xattrs
            })
        };
        let candidates: std::collections::HashSet<RelPath> = (self.nodes.iter())
            .filter_map(|(p, n)| match n {
                Node::Dir {
                    entry: Some(e),
                    hides: false,
                } if !p.is_root() && same_as_base(p, e) => Some(p.clone()),
                _ => None,
            })
            .collect();
        // Every directory above something that stays in the layer stays.
        let mut needed = std::collections::HashSet::new();
        for (p, n) in &self.nodes {
            let stays = match n {
                Node::Gone => self.base_shows(base, p),
                _ => !candidates.contains(p),
            };
            if stays {
                let mut a = p.parent();
                while !a.is_root() && needed.insert(a.clone()) {
                    a = a.parent();
                }
            }
        }
        candidates.difference(&needed).cloned().collect()
    }

    /// Whether the base's `p` shows through what the parts made: the
    /// base has it and no directory above it hides the lower layers.
    fn base_shows(&self, base: &Manifest, p: &RelPath) -> bool {
        if base.get(p).is_none() {
            return false;
        }
        let mut a = p.parent();
        loop {
            if matches!(self.nodes.get(&a), Some(Node::Dir { hides: true, .. })) {
                return false;
            }
            if a.is_root() {
                return true;
            }
            a = a.parent();
        }
    }
}

/// Merges `parts` (from the layout `from`, oldest first) into one layer
/// written to `to`. A later entry replaces an earlier one; a deletion
/// removes what earlier parts made at and under its path, and stays as a
/// whiteout only if `how.base` has the path; a directory made opaque (or
/// deleted and made again) hides what earlier parts made under it, and
/// is marked opaque only if the base has it; the files of a hard link
/// group that are still one inode at the end stay linked (the first in
/// layer order holds the content), a link whose target was replaced or
/// deleted becomes the file it linked to. Members are written in path
/// order, headers filled as [`generate`] fills them: the same parts give
/// the same bytes. Returns the layer, which is empty (no members) when
/// the parts changed nothing; [`is_empty_layer`] tells so from its
/// diff_id.
pub fn merge_layers(
    from: &Layout,
    parts: &[Part<'_>],
    to: &Layout,
    how: &Merge<'_>,
) -> Result<LayerOutput, LayerError> {
    let mut spool = tempfile::tempfile_in(to.root())?;
    let mut spooled = 0u64;
    let mut m = Merged {
        nodes: BTreeMap::new(),
        files: Vec::new(),
    };
    for part in parts {
        let digest = media::digest_of(part.desc).map_err(super::LayoutError::from)?;
        let mut deletions = Vec::new();
        let mut puts = Vec::new();
        // As in `rewrite_layer`: a hard link to an overlay whiteout is a
        // whiteout, a link to a skipped member is skipped.
        let mut whiteouts = HashSet::new();
        let mut skipped = HashSet::new();
        {
            let mut w = BufWriter::new(&mut spool);
            for_each_member(from, part.desc, part.diff_id, |item, data| {
                let link_target = |e: &Entry| match (&e.kind, &e.link) {
                    (Kind::Hardlink, Some(l)) => Some(RelPath::new(l.clone())),
                    _ => None,
                };
                match item {
                    TarItem::Entry(e)
                        if part.skip.contains(&e.path)
                            || link_target(e).is_some_and(|t| skipped.contains(&t)) =>
                    {
                        skipped.insert(e.path.clone());
                    }
                    TarItem::Entry(e)
                        if how.overlay_upper
                            && (is_overlay_whiteout(e)
                                || link_target(e).is_some_and(|t| whiteouts.contains(&t))) =>
                    {
                        whiteouts.insert(e.path.clone());
                        deletions.push(Op::Whiteout(e.path.clone()));
                    }
                    TarItem::Entry(e) => {
                        if how.overlay_upper && take_overlay_opaque(e) {
                            deletions.push(Op::Opaque(e.path.clone()));
                        }
                        match e.kind {
                            Kind::File => {
                                let n = io::copy(&mut data.take(e.size), &mut w)?;
                                if n != e.size {
                                    return Err(LayerError::Io(io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        "the member is shorter than its header says",
                                    )));
                                }
                                m.files.push((e.clone(), spooled));
                                spooled += n;
                                puts.push(Op::File(e.path.clone(), m.files.len() - 1));
                            }
                            Kind::Hardlink => {
                                let target = link_target(e).unwrap_or_default();
                                puts.push(Op::Link(e.path.clone(), target));
                            }
                            _ => puts.push(Op::Put(e.clone())),
                        }
                    }
                    // A layer's own markers apply to the layers under it:
                    // before its entries, whatever their order in the tar.
                    TarItem::Whiteout(p) => deletions.push(Op::Whiteout(p.clone())),
                    TarItem::Opaque(d) => deletions.push(Op::Opaque(d.clone())),
                    TarItem::Skip => {}
                }
                Ok(())
            })?;
            w.flush()?;
        }
        for op in deletions.into_iter().chain(puts) {
            m.apply(op, &digest)?;
        }
    }
    write_merged(&m, &mut spool, to, how)
}

/// Writes the merged tree as one layer blob.
fn write_merged(
    m: &Merged,
    spool: &mut std::fs::File,
    to: &Layout,
    how: &Merge<'_>,
) -> Result<LayerOutput, LayerError> {
    // The first path (in layer order) of each content still present holds
    // it; the others link to that one.
    let mut holder: BTreeMap<usize, &RelPath> = BTreeMap::new();
    for (p, n) in &m.nodes {
        if let Node::File(i) | Node::Link(i) = n {
            holder.entry(*i).or_insert(p);
        }
    }
    let opts = &how.tar;
    let mut b = super::start_layer_tar(to, how.compression, how.level)?;
    let unchanged = m.unchanged_dirs(how.base);
    for (p, n) in &m.nodes {
        if unchanged.contains(p) {
            continue;
        }
        match n {
            Node::Gone => {
                if m.base_shows(how.base, p) {
                    generate::put_marker(&mut b, Change::Whiteout(p.clone()).tar_path(), opts)?;
                }
            }
            Node::Dir { entry, hides } => {
                if let Some(e) = entry {
                    generate::put_entry(&mut b, e, Content::Root(std::path::Path::new("/")), opts)?;
                }
                let base_dir = how.base.get(p).is_some_and(|e| e.kind == Kind::Dir);
                if *hides && base_dir && m.base_shows(how.base, p) {
                    generate::put_marker(&mut b, Change::Opaque(p.clone()).tar_path(), opts)?;
                }
            }
            Node::Other(e) => {
                generate::put_entry(&mut b, e, Content::Root(std::path::Path::new("/")), opts)?;
            }
            Node::File(i) | Node::Link(i) => {
                let (file, at) = &m.files[*i];
                let mut e = file.clone();
                e.path = p.clone();
                match holder.get(i) {
                    Some(&first) if first != p => {
                        e.kind = Kind::Hardlink;
                        e.size = 0;
                        e.link = Some(first.as_bytes().to_vec());
                        let content = Content::Root(std::path::Path::new("/"));
                        generate::put_entry(&mut b, &e, content, opts)?;
                    }
                    _ => {
                        spool.seek(SeekFrom::Start(*at))?;
                        let mut r = (&mut *spool).take(e.size);
                        generate::put_entry(&mut b, &e, Content::Reader(&mut r), opts)?;
                    }
                }
            }
        }
    }
    super::finish_layer_tar(b, how.compression)
}

/// Whether a layer's diff_id is that of a tar without members (the two
/// zero blocks that end an archive): a layer that changes nothing, which
/// an image leaves out.
pub fn is_empty_layer(diff_id: &str) -> bool {
    Digest::of(&[0u8; 1024]).to_string() == diff_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::compress::Compression;

    /// A member of a test layer: path, tar type, content (a file's) or
    /// link target (a hard link's), and whether overlayfs marked it opaque.
    type M<'a> = (&'a str, tar::EntryType, &'a str, bool);

    /// An uncompressed layer blob in `layout` made of `members`; a char
    /// device is 0:0 (an overlay whiteout).
    fn layer_of(layout: &Layout, members: &[M<'_>]) -> (Descriptor, String) {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, opaque) in members {
            if *opaque {
                b.append_pax_extensions([("SCHILY.xattr.user.overlay.opaque", &b"y"[..])])
                    .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if kind.is_character_special() {
                h.set_device_major(0).unwrap();
                h.set_device_minor(0).unwrap();
            }
            if kind.is_hard_link() {
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            } else if kind.is_file() {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            } else {
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            }
        }
        let bytes = b.into_inner().unwrap();
        let mut w = layout.blob_writer().unwrap();
        w.write_all(&bytes).unwrap();
        let (digest, size) = w.commit(None).unwrap();
        let desc = Descriptor::new(
            Compression::None.media_type(),
            size,
            media::to_spec_digest(&digest),
        );
        (desc, digest.to_string())
    }

    /// The members of a layer, one line each (a file with its content).
    fn members_of(layout: &Layout, out: &LayerOutput) -> Vec<String> {
        let mut seen = Vec::new();
        let diff_id = out.diff_id.to_string();
        for_each_member(layout, &out.descriptor, &diff_id, |item, data| {
            seen.push(match item {
                TarItem::Entry(e) => {
                    let mut s = format!("{:?} {}", e.kind, e.path);
                    if let Some(l) = &e.link {
                        s += &format!(" -> {}", String::from_utf8_lossy(l));
                    }
                    if e.kind == Kind::File {
                        let mut c = String::new();
                        data.read_to_string(&mut c)?;
                        s += &format!(" {c:?}");
                    }
                    s
                }
                TarItem::Whiteout(p) => format!("whiteout {p}"),
                TarItem::Opaque(p) => format!("opaque {p}"),
                TarItem::Skip => "skip".into(),
            });
            Ok(())
        })
        .unwrap();
        seen
    }

    fn rel(p: &str) -> RelPath {
        RelPath::new(p.as_bytes().to_vec())
    }

    fn base_of(paths: &[(&str, Kind)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, k) in paths {
            m.insert(Entry::new(rel(p), *k));
        }
        m
    }

    fn merge(
        layout: &Layout,
        parts: &[(Descriptor, String)],
        skip: &[RelPath],
        base: &Manifest,
    ) -> LayerOutput {
        let parts: Vec<Part<'_>> = parts
            .iter()
            .map(|(desc, diff_id)| Part {
                desc,
                diff_id,
                skip,
            })
            .collect();
        let how = Merge {
            compression: Compression::None,
            level: None,
            tar: TarOptions::default(),
            overlay_upper: true,
            base,
        };
        merge_layers(layout, &parts, layout, &how).unwrap()
    }

    /// Two rules' overlay uppers merged on a base: later wins, deletions
    /// of the base's files stay as whiteouts, what came and went leaves no
    /// trace, an opaque directory hides the earlier rule's children and
    /// is marked (the base has the directory), a hard link whose target a
    /// later rule replaced keeps the old content, mount points are left
    /// out.
    #[test]
    fn later_wins_and_only_the_bases_deletions_stay() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(t.path().join("l")).unwrap();
        use tar::EntryType as T;
        let one = layer_of(
            &layout,
            &[
                ("a", T::Regular, "1", false),
                ("d/", T::Directory, "", false),
                ("d/old", T::Regular, "old", false),
                ("etc/", T::Directory, "", false),
                ("etc/motd", T::Char, "", false),
                ("etc/issue", T::Link, "etc/motd", false),
                ("h1", T::Regular, "h", false),
                ("h2", T::Link, "h1", false),
                ("k1", T::Regular, "k", false),
                ("k2", T::Link, "k1", false),
                ("mnt/", T::Directory, "", false),
                ("tmp1", T::Regular, "gone soon", false),
            ],
        );
        let two = layer_of(
            &layout,
            &[
                ("a", T::Regular, "2", false),
                ("d/", T::Directory, "", true),
                ("d/new", T::Regular, "new", false),
                ("h1", T::Regular, "H", false),
                ("tmp1", T::Char, "", false),
            ],
        );
        let base = base_of(&[
            ("d", Kind::Dir),
            ("d/x", Kind::File),
            ("etc", Kind::Dir),
            ("etc/motd", Kind::File),
        ]);
        let skip = [rel("mnt")];
        let out = merge(&layout, &[one.clone(), two.clone()], &skip, &base);
        assert_eq!(
            members_of(&layout, &out),
            [
                "File /a \"2\"",
                "Dir /d",
                "opaque /d",
                "File /d/new \"new\"",
                "Dir /etc",
                "whiteout /etc/motd",
                "File /h1 \"H\"",
                "File /h2 \"h\"",
                "File /k1 \"k\"",
                "Hardlink /k2 -> k1",
            ]
        );
        // The same parts, the same bytes.
        let again = merge(&layout, &[one, two], &skip, &base);
        assert_eq!(again.descriptor, out.descriptor);
        assert!(!is_empty_layer(&out.diff_id.to_string()));
    }

    /// A directory deleted and made again hides the base's children; a
    /// deletion under a directory that already hides the base needs no
    /// marker; a rule that changed nothing the base has gives an empty
    /// layer.
    #[test]
    fn a_directory_made_again_hides_the_base_and_nothing_left_is_empty() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(t.path().join("l")).unwrap();
        use tar::EntryType as T;
        let base = base_of(&[("d", Kind::Dir), ("d/x", Kind::File), ("e", Kind::Dir)]);
        let gone = layer_of(
            &layout,
            &[("d", T::Char, "", false), ("f", T::Regular, "f", false)],
        );
        let again = layer_of(
            &layout,
            &[("d/", T::Directory, "", false), ("f", T::Char, "", false)],
        );
        let out = merge(&layout, &[gone.clone(), again], &[], &base);
        assert_eq!(members_of(&layout, &out), ["Dir /d", "opaque /d"]);
        // Created, then deleted: nothing.
        let out = merge(&layout, std::slice::from_ref(&gone), &[], &base_of(&[]));
        assert_eq!(members_of(&layout, &out), ["File /f \"f\""]);
        let del = layer_of(&layout, &[("f", T::Char, "", false)]);
        let out = merge(&layout, &[gone, del], &[], &base_of(&[]));
        assert!(members_of(&layout, &out).is_empty());
        assert!(is_empty_layer(&out.diff_id.to_string()));
    }
    /// A directory a rule's sandbox only wrote in (overlayfs copied it up
    /// to make a mount point that is skipped) is no change: with nothing
    /// else under it and the base's mode, owner and xattrs, it is left
    /// out, and a squash of such rules is empty. A changed mode is kept.
    #[test]
    fn a_directory_only_copied_up_is_no_change() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(t.path().join("l")).unwrap();
        use tar::EntryType as T;
        let part = layer_of(
            &layout,
            &[
                ("etc/", T::Directory, "", false),
                ("etc/hosts", T::Regular, "", false),
                ("srv/", T::Directory, "", false),
            ],
        );
        let dir = |p: &str, mode: u32| {
            let mut e = Entry::new(rel(p), Kind::Dir);
            e.mode = mode;
            e
        };
        let mut base = Manifest::default();
        base.insert(dir("etc", 0o644));
        base.insert(dir("srv", 0o644));
        let skip = [rel("etc/hosts")];
        let out = merge(&layout, std::slice::from_ref(&part), &skip, &base);
        assert!(
            members_of(&layout, &out).is_empty(),
            "{:?}",
            members_of(&layout, &out)
        );
        assert!(is_empty_layer(&out.diff_id.to_string()));
        // The mode changed: a change.
        let mut base = Manifest::default();
        base.insert(dir("etc", 0o644));
        base.insert(dir("srv", 0o755));
        let out = merge(&layout, &[part], &skip, &base);
        assert_eq!(members_of(&layout, &out), ["Dir /srv"]);
    }
}
