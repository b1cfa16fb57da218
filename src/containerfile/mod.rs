//! Containerfiles (Dockerfiles): the text parsed into a typed syntax tree,
//! the build arguments and variables substituted stage by stage, and the
//! `.dockerignore` / `.containerignore` rules.
//!
//! This is the frontend's pure half: it reads text and returns values, so
//! the build engine can lower a resolved file into its own plan without
//! this module knowing anything of sandboxes or layers. It follows what
//! BuildKit's Dockerfile frontend accepts, because people bring files
//! written for it; where it is stricter (an unknown flag is an error,
//! never ignored) the error names `FILE:LINE` and the instruction.
//!
//! - [`parse`]: text → [`Containerfile`] (instructions with their lines
//!   and original text; nothing substituted yet).
//! - [`resolve`]: a parsed file, build arguments and a target → the
//!   [`Stage`]s with every variable substituted and the stages the target
//!   needs, in dependency order.
//! - [`ignore`]: the context's ignore file as a matcher.
//! - [`Run::invocation`]: what a RUN executes once its heredocs are folded
//!   in; [`Mount::effective_id`] and [`Mount::effective_target`]: a
//!   mount's defaults.
//!
//! Where it knowingly differs from BuildKit:
//! - flags BuildKit has and shipyard does not handle yet (`RUN
//!   --security`, `ADD --unpack`) are refused as unknown, not ignored;
//! - a mount's `type` is read before substitution (`type=$T` is refused);
//! - `MAINTAINER` stays an instruction: Docker and buildah set the
//!   config's `author` from it, not a label.

mod ast;
mod flags;
pub mod ignore;
mod lex;
mod lines;
mod parse;
mod resolve;
mod words;

#[cfg(test)]
mod tests;

pub use ast::{
    ArgDecl, Command, Containerfile, Healthcheck, HealthcheckCmd, Heredoc, Instruction, Invocation,
    Located, Mount, MountKind, Network, Run, Source, Transfer,
};
pub use parse::{parse, parse_trigger};
pub use resolve::{resolve, Base, FromRef, ResolveOptions, Resolved, Stage, Step, PROXY_ARGS};

/// Why a Containerfile cannot be used. Every variant names the file and,
/// where there is one, the line and the instruction, because a user fixes
/// a Containerfile by going to that line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An instruction is wrong: unknown, malformed, or its values do not
    /// substitute.
    #[error("{file}:{line}: {instruction}: {message}")]
    Instruction {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    /// A line is wrong before it is an instruction (a directive, a
    /// heredoc that never ends).
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    /// The file as a whole is wrong (no stage, no such target).
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

impl Error {
    /// The line the error is on, if it has one (tests and editors use it).
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Instruction { line, .. } | Error::Line { line, .. } => Some(*line),
            Error::File { .. } => None,
        }
    }
}
