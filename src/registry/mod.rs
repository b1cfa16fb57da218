//! Registries: credentials, the HTTP client, pull into the shared cache and
//! push from a layout. `transport` ties them to the other image stores.

pub mod auth;
pub mod client;
pub mod progress;
pub mod pull;
pub mod push;

pub use client::{Client, Options, RegistryError};

/// The manifest types shipyard reads, in order of preference.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; a bigger answer is an error, not an allocation.
pub const MAX_MANIFEST: u64 = 4 << 20;
