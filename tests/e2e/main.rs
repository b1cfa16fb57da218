//! The end-to-end tests: shipyard against the real peers (skopeo, umoci,
//! podman, buildah, docker-registry, dockerd) on this machine. Built only
//! with the `e2e` feature (`required-features` in Cargo.toml); a missing
//! tool fails a test, nothing is skipped silently.
//!
//! `cargo test -p shipyard --features e2e --test e2e [FILTER]` runs them;
//! scripts/test runs this binary as each test user, with the distro bases
//! and the CI image it makes. A filter is a module path: `registry::`,
//! `peers::skopeo`.
//!
//! A new test file is a module here (`mod name;`, `tests/e2e/name.rs`),
//! starting with `use crate::common::*;`. Tests run in parallel threads of
//! this one process: nothing may change process-wide state.

/// Helpers shared with the hermetic binary (`tests/common/`); each binary
/// declares the files it uses.
#[path = "../common"]
mod common {
    pub mod cli;
    pub mod image;
    pub mod pod;
    pub mod project;
    pub mod registry;
    pub mod tree;
    pub mod users;
    pub mod wait;

    pub use cli::*;
    pub use image::*;
    pub use tree::*;
    pub use users::*;
    pub use wait::*;
}

mod cache;
mod containerfile;
mod containers;
mod distro;
mod examples;
mod peers;
mod pod;
mod registry;
mod sbom;
