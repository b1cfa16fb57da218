//! shipyard-image: OCI images on disk, in archives and in registries.
//!
//! The image half of shipyard, usable without its build machinery: a
//! program that wants to write a layer from a directory, unpack an image
//! safely without root, or copy images between layouts, archives and
//! registries embeds this crate and brings its own command line.
//!
//! # Modules
//!
//! - [`oci`]: digests, media types, OCI image layouts on disk
//!   ([`oci::layout`]), images and their configs ([`oci::image`]).
//! - [`rootfs`]: a tree's manifest (paths, owners, modes, hashes), walking
//!   a directory into one and diffing it against another.
//! - [`layer`]: layers generated from a diff ([`layer::generate`]), read
//!   member by member ([`layer::read`]) and extracted safely, rootless
//!   ([`layer::extract`]); compression; an image's tree without unpacking
//!   it ([`layer::from_image`]).
//! - [`reference`](mod@reference): `oci:`, `docker://`, `oci-archive:` and
//!   `docker-archive:` references, parsed.
//! - [`archive`]: reading and writing OCI and docker archives.
//! - [`registry`]: a distribution-v2 client (auth, retries, pull, push).
//! - [`cache`]: the shared, verified blob cache registries and archives
//!   are read through.
//! - [`transport`]: one "source, then destination" over all of the above.
//! - [`registries_conf`]: `registries.conf`, for short names and mirrors.
//! - [`inroot`], [`fsutil`] and [`reproducible`]: path resolution inside a
//!   root, atomic writes and tree copies, and the timestamp outputs carry.
//! - [`error`]: an error and its causes as one line.
//!
//! # Errors
//!
//! Every module returns its own error type. An error's message says its
//! own step and returns the cause as `source()`, never both, so a program
//! printing the chain says each cause once; [`error::chain_text`] is that
//! chain as one line. Failed system calls keep their `io::Error` (and errno).
//!
//! # Example
//!
//! A layer from a small tree, written into a new layout as an image,
//! then the image's tree read back from the layout:
//!
//! ```
//! use shipyard_image::layer::compress::Compression;
//! use shipyard_image::layer::from_image::manifest_of_image;
//! use shipyard_image::layer::{generate::TarOptions, write_layer};
//! use shipyard_image::oci::image::{append_layer, empty_config, rfc3339, write_image, Image};
//! use shipyard_image::oci::layout::Layout;
//! use shipyard_image::rootfs::entry::{Kind, RelPath};
//! use shipyard_image::rootfs::{diff::diff, manifest::Manifest, walk};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let work = tempfile::tempdir()?;
//! let tree = work.path().join("tree");
//! std::fs::create_dir_all(tree.join("etc"))?;
//! std::fs::write(tree.join("etc/motd"), "hello\n")?;
//!
//! // Everything the tree adds to an empty image, as one gzip layer.
//! let layout = Layout::open_or_create(work.path().join("layout"))?;
//! let changes = diff(&walk::walk(&tree, walk::Hashing::None)?, &Manifest::default())?.changes;
//! let reproducible = TarOptions { clamp_mtime: Some(0) };
//! let layer = write_layer(&layout, &changes, &tree, Compression::Gzip, None, &reproducible)?;
//! let mut config = empty_config();
//! append_layer(&mut config, &layer.diff_id, &rfc3339(0), "example");
//! let image = write_image(&layout, &config, vec![layer.descriptor])?;
//! layout.tag("v1", &image)?;
//!
//! // Read back by tag, digests verified: the image's tree, not unpacked.
//! let image = Image::load(&layout, &layout.resolve(Some("v1"))?)?;
//! let files = manifest_of_image(&layout, &image)?;
//! let motd = files.get(&RelPath::new("etc/motd")).expect("the layer holds etc/motd");
//! assert_eq!(motd.kind, Kind::File);
//! assert_eq!(motd.size, 6);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod archive;
pub mod cache;
pub mod error;
pub mod fsutil;
pub mod inroot;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod registries_conf;
pub mod registry;
pub mod reproducible;
pub mod rootfs;
pub mod transport;
