//! shipyard: a daemonless, rootless OCI image assembler.
//!
//! This crate holds the build: the project spec, the sandbox, tapeout,
//! pods and the command line. Images themselves (layouts, layers, rootfs
//! manifests, registries, transports) live in the `shipyard-image` crate.
//! `main.rs` only parses the command line. See `ARCHITECTURE.md`.

pub mod build;
pub mod cli;
pub mod pod;
pub mod project;
pub mod sandbox;
pub mod tapeout;

#[cfg(test)]
mod architecture;
