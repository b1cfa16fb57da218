//! What a build tells its user. The build itself does not print: it sends
//! these events to a sink its caller supplies (the command line prints
//! them, honouring `-q` and `--explain`; a program embedding the build may
//! collect them, or drop them with [`Silent`]). A rule's own output is the
//! one exception: the sandbox relays it line by line as the rule writes it
//! (`sandbox::RunOptions::echo`), besides keeping it in the rule's log.

use std::path::Path;

/// A build's progress and explanations, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// The isolation level the steps run at, and why
    /// (`Confinement::summary`).
    Isolation(&'a str),
    /// What the build does with a step or an image layer: `status` is
    /// `cached`, `run`, `make` or `not needed`; `why` says why it runs (or
    /// is empty).
    Step {
        step: &'a str,
        status: &'a str,
        why: &'a str,
    },
    /// A step that ran is done.
    Done { step: &'a str, seconds: f64 },
    /// Why a path is in an image (`--explain`).
    Explain {
        image: &'a str,
        path: &'a str,
        why: &'a str,
    },
    /// A pod is being written.
    Pod(&'a str),
    /// How many entries `--cache-to` received.
    CacheExported { entries: usize, to: &'a str },
    /// The builder's state was kept (`--keep-builder`).
    BuilderKept {
        state: &'a Path,
        changes: &'a Path,
        logs: &'a Path,
    },
}

/// Receives a build's events. Called from the thread that runs the
/// steps; `Sync` because the build shares itself with its background
/// jobs.
pub trait Events: Sync {
    fn event(&self, e: Event<'_>);
}

/// A sink that drops every event.
pub struct Silent;

impl Events for Silent {
    fn event(&self, _: Event<'_>) {}
}
