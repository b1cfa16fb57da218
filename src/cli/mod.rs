//! The command line: one module per subcommand. Errors are `anyhow` with
//! context here, at the edge; the library uses typed errors.

mod build;
mod cache;
mod completion;
mod config;
mod copy;
mod diff;
mod export;
mod gc;
mod import;
mod index;
mod inspect;
mod login;
mod ls;
pub mod man;
mod manifest;
mod pod;
mod progress;
mod pull;
mod push;
mod sandbox_helper;
mod shell;
mod tag;
pub mod transfer;
mod unpack;
mod values;

use anyhow::Result;
use clap::{Parser, Subcommand};
use shipyard_image::oci::image::Image;
use shipyard_image::oci::layout::Layout;
use shipyard_image::reference::Reference;

/// Daemonless, rootless OCI image assembler.
///
/// shipyard writes OCI image layouts directly: it diffs a directory tree
/// against a manifest and emits one minimal, reproducible layer; it unpacks
/// images safely without root; it inspects and garbage-collects layouts;
/// it pulls from and pushes to registries and reads and writes archives.
/// Images are named like skopeo names them: oci:DIR[:TAG],
/// docker://HOST/REPO[:TAG], oci-archive:FILE[:TAG],
/// docker-archive:FILE[:NAME:TAG].
#[derive(Debug, Parser)]
#[command(name = "shipyard", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Build(Box<build::Args>),
    Cache(cache::Args),
    Manifest(manifest::Args),
    Diff(diff::Args),
    Unpack(unpack::Args),
    Inspect(inspect::Args),
    Ls(ls::Args),
    Tag(tag::Args),
    Config(Box<config::Args>),
    Index(index::Args),
    Gc(gc::Args),
    Pull(pull::Args),
    Push(push::Args),
    Copy(copy::Args),
    Export(export::Args),
    Import(import::Args),
    Pod(pod::Args),
    Login(login::Args),
    Logout(login::LogoutArgs),
    Shell(shell::Args),
    Completion(completion::Args),
    #[command(hide = true)]
    GenerateMan(man::Args),
    #[command(name = "__sandbox", hide = true)]
    Sandbox,
    #[command(name = "__cleanup", hide = true)]
    Cleanup {
        dir: std::path::PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(a) => build::run(*a, cli.quiet),
        Command::Cache(a) => cache::run(a, cli.quiet),
        Command::Manifest(a) => manifest::run(a),
        Command::Diff(a) => diff::run(a, cli.quiet),
        Command::Unpack(a) => unpack::run(a, cli.quiet),
        Command::Inspect(a) => inspect::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Tag(a) => tag::run(a),
        Command::Config(a) => config::run(*a),
        Command::Index(a) => index::run(a),
        Command::Gc(a) => gc::run(a, cli.quiet),
        Command::Pull(a) => pull::run(a, cli.quiet),
        Command::Push(a) => push::run(a, cli.quiet),
        Command::Copy(a) => copy::run(a, cli.quiet),
        Command::Export(a) => export::run(a, cli.quiet),
        Command::Import(a) => import::run(a, cli.quiet),
        Command::Pod(a) => pod::run(a, cli.quiet),
        Command::Login(a) => login::run(a, cli.quiet),
        Command::Logout(a) => login::run_logout(a, cli.quiet),
        Command::Shell(a) => shell::run_cmd(a),
        Command::Completion(a) => completion::run(a),
        Command::GenerateMan(a) => man::run(a),
        Command::Sandbox => sandbox_helper::run(),
        Command::Cleanup { dir } => {
            crate::build::remove_or_warn(&dir);
            Ok(())
        }
    }
}

/// An error and its causes for the user, each said once: where a
/// module's message already holds its cause's text (it names the cause
/// and also returns it as `source()`), the cause is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    shipyard_image::error::chain_text(e.as_ref())
}

/// The clap definition, for man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses an `oci:DIR[:TAG]` argument into its layout and tag.
pub(crate) fn oci_ref(s: &str) -> Result<(std::path::PathBuf, Option<String>)> {
    match Reference::parse(s)? {
        Reference::Oci { dir, tag } => Ok((dir, tag)),
        other => anyhow::bail!(
            "{other}: this option takes a layout, oci:DIR[:TAG]; copy the image there first with `shipyard pull {other} oci:DIR`"
        ),
    }
}

/// Opens the image any reference names: `oci:` directly, registries and
/// archives through the shared cache (see [`shipyard_image::transport`]),
/// with the default transport options.
pub fn open_image(s: &str) -> Result<(Layout, Image)> {
    Ok(shipyard_image::transport::open_image(
        &Reference::parse(s)?,
        &shipyard_image::transport::Options::default(),
    )?)
}

/// Like [`open_image`], reaching registries with a command's own
/// registry options.
pub fn open_image_with(s: &str, r: &transfer::RegistryArgs) -> Result<(Layout, Image)> {
    let reference = Reference::parse(s)?;
    Ok(shipyard_image::transport::open_image(
        &reference,
        &r.read_options(&reference)?,
    )?)
}
