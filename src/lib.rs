//! shipyard: a daemonless, rootless OCI image assembler.
//!
//! This crate holds the build: the project spec, the sandbox, tapeout,
//! pods and the command line. Images themselves (layouts, layers, rootfs
//! manifests, registries, transports) live in the `shipyard-image` crate.
//! `main.rs` only parses the command line. See `ARCHITECTURE.md`.
//!
//! Unsafe code is denied here and allowed only in the sandbox modules
//! that make system calls nix does not wrap (or that fork); each block
//! says why it is sound in a `SAFETY:` comment, which clippy enforces.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod build;
pub mod cli;
pub mod containerfile;
pub mod frontend;
pub mod pod;
pub mod project;
pub mod sandbox;
pub mod sbom;
pub mod tapeout;

#[cfg(test)]
mod architecture;
