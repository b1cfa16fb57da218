//! shipyard: a daemonless, rootless OCI image assembler.
//!
//! The library holds everything; `main.rs` only parses the command line.
//! See `DESIGN.md` in the shared folder and `README.md` for the pipeline.

pub mod archive;
pub mod build;
pub mod cache;
pub mod cli;
pub mod inroot;
pub mod layer;
pub mod oci;
pub mod pod;
pub mod reference;
pub mod registry;
pub mod reproducible;
pub mod rootfs;
pub mod sandbox;
pub mod spec;
pub mod tapeout;
pub mod transport;
