//! Registries: credentials, the HTTP client, pull into the shared cache and
//! push from a layout. `transport` ties them to the other image stores.

pub mod auth;
pub mod client;
pub mod fetch;
pub mod progress;
pub mod pull;
pub mod push;
pub mod tags;

pub use client::{Client, Options, RegistryError};

use std::sync::atomic::{AtomicUsize, Ordering};

/// The manifest types shipyard reads, in order of preference.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; a bigger answer is an error, not an allocation.
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;

/// Runs `f` over `items` on up to `jobs` threads (pull and push move
/// blobs this way); the first error wins and stops handing out work.
pub fn parallel<T: Sync>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> client::Result<()> + Sync,
) -> client::Result<()> {
    let next = AtomicUsize::new(0);
    let first_err = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    return;
                }
                if let Err(e) = f(&items[i]) {
                    if let Ok(mut g) = first_err.lock() {
                        g.get_or_insert(e);
                    }
                    // Stop handing out work.
                    next.store(items.len(), Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    match first_err.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}
