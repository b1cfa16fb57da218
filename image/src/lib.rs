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
pub mod inroot;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod reproducible;
pub mod rootfs;
pub mod transport;

/// `e` and each of its causes, joined by ": ". The errors of this crate
/// print their own step only and return the cause as `source()` (so a
/// program walking the chain says each cause once); code that must
/// flatten an error to one line (a log line for a failure it recovers
/// from, a message crossing a process boundary) uses this, since
/// `e.to_string()` alone would drop the why.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
