//! shipyard-image: OCI images on disk, in archives and in registries.
//!
//! The image half of shipyard, usable without its build machinery: OCI
//! image layouts ([`oci::layout`]), layers generated from and extracted to
//! trees ([`layer`]), rootfs manifests and their diffs ([`rootfs`]), image
//! references ([`reference`]), docker and OCI archives ([`archive`]), a
//! distribution-v2 registry client ([`registry`]), the shared blob cache
//! ([`cache`]) and one source/destination abstraction over all of them
//! ([`transport`]).

pub mod archive;
pub mod cache;
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
