//! The hermetic integration tests: everything that needs the shipyard
//! binary and this machine, but no peer tool and no network. One test
//! binary (each module was once a binary of its own), so `tests/common` is
//! compiled once and every helper in it is used.
//!
//! `cargo test -p shipyard --test hermetic [FILTER]` runs them;
//! scripts/test runs this binary as root and as each test user. A filter
//! is a module path: `hostile::`, `cache::a_changed_source_file`.
//!
//! A new test file is a module here (`mod name;`, `tests/hermetic/name.rs`),
//! starting with `use crate::common::*;`. Tests run in parallel threads of
//! this one process: nothing may change process-wide state (umask,
//! current directory, environment); do that in a child process
//! ([`common::rerun`]).

/// Helpers shared with the e2e binary (`tests/common/`); each binary
/// declares the files it uses.
#[path = "../common"]
mod common {
    pub mod cli;
    pub mod failures;
    pub mod image;
    pub mod pod;
    pub mod project;
    pub mod rawtar;
    pub mod rerun;
    pub mod steps;
    pub mod tree;
    pub mod users;
    pub mod wait;

    pub use cli::*;
    pub use failures::*;
    pub use image::*;
    pub use rerun::*;
    pub use tree::*;
    pub use users::*;
    pub use wait::*;
}

mod archive;
mod build;
mod cache;
mod cli;
mod containerfile_config;
mod containerfile_features;
mod containerfile_mounts;
mod determinism;
mod diff;
mod hostile;
mod hostile_steps;
mod hostile_tapeout;
mod isolation;
mod isolation_none;
mod layout;
mod multistage;
mod ownership;
mod pod;
mod props;
mod props_registry;
mod rootless;
mod sandbox;
mod sbom;
mod tapeout_onto;
