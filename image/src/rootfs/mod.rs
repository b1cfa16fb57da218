//! Rootfs manifests (taken from a tree or from an image's layers) and the
//! diff of a tree against a manifest.

pub mod changeset;
pub mod diff;
pub mod entry;
pub mod manifest;
pub mod walk;
