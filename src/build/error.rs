//! Why a build failed.

use super::inplace::InPlaceError;
use super::key::KeyError;
use super::mounts::MountError;
use super::schedule::ScheduleError;
use super::stepcache::StepCacheError;
use crate::sandbox::{IsolationError, SandboxError};

/// A boxed cause from a layer below (the image library, the transport,
/// the pod writer), whose own type the build does not need to name.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build failed. Each message says what the build was doing; the
/// cause, when there is one, is returned by `source()` and not repeated.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `--image`, `--pod` or `--no-cache-rule` names what the plan lacks.
    #[error(transparent)]
    Request(#[from] ScheduleError),
    /// A rule exited non-zero: its code and the end of its log.
    #[error(transparent)]
    RuleFailed(#[from] RuleFailed),
    #[error(
        "build.{rule} needs the secret {name:?}: pass --secret id={name},src=FILE \
         (or id={name},env=VARIABLE)"
    )]
    MissingSecret { rule: String, name: String },
    /// The isolation level chosen cannot run this builder.
    #[error("{0}")]
    UnusableBuilder(String),
    #[error("builder base {from}: no such directory")]
    NoBaseDir {
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("builder base {0}: not a directory")]
    BaseNotADir(String),
    #[error("builder base {0:?}: expected host, rootfs:DIR, scratch or an image reference")]
    UnknownBase(String),
    /// A job the build runs in the builder's user namespace (a restore, a
    /// capture, a tapeout) failed: its name and the end of its output.
    #[error("{name}: {tail}")]
    Job { name: String, tail: String },
    /// A `--cache-from` tag that holds something else.
    #[error("{0}: not a shipyard cache entry (config {1})")]
    NotACacheEntry(String, String),
    #[error("{0}: the entry's layer does not match its record")]
    EntryMismatch(String),
    /// A builder made from another's state (or an image of a builder)
    /// needs a rule's captured changes, which the cache does not hold.
    #[error(
        "{what} needs what {rule} changed, and the step cache does not hold it ({why}); \
         run the build without --isolation none and with overlay or a copy the cache expects"
    )]
    NoState {
        what: String,
        rule: String,
        why: String,
    },
    /// Several builders at isolation none would share the container's /.
    #[error(
        "isolation none runs rules in this container's own /, so a spec with several builders \
         cannot use it; use --isolation userns or chroot"
    )]
    SeveralInPlace,
    #[error("a background job of the build panicked")]
    Panicked,
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    StepCache(#[from] StepCacheError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    InPlace(#[from] InPlaceError),
    /// Any other step of the build: what it was doing, and why it failed.
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        source: Cause,
    },
}

/// A failed rule, as the user sees it.
#[derive(Debug, thiserror::Error)]
#[error("{rule} failed with exit code {code}{}; last lines of its log ({log}):\n{tail}", if *code == crate::sandbox::helper::SETUP_FAILED { " (the sandbox could not start it)" } else { "" })]
pub struct RuleFailed {
    pub rule: String,
    pub code: i32,
    pub log: String,
    pub tail: String,
}

/// Says what the build was doing when a lower layer failed.
pub(crate) trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, BuildError>;
}

impl<T, E: Into<Cause>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, BuildError> {
        self.map_err(|e| BuildError::Failed {
            what: what(),
            source: e.into(),
        })
    }
}

pub(crate) use shipyard_image::error::chain_text;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_failure_says_what_was_done_once_and_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Err::<(), _>(io).doing(|| "reading x".into()).unwrap_err();
        assert_eq!(e.to_string(), "reading x");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));
        assert_eq!(chain_text(&e), "reading x: gone");
    }

    #[test]
    fn a_failed_rule_reports_its_code_and_log() {
        let e = BuildError::from(RuleFailed {
            rule: "build.a".into(),
            code: 3,
            log: "/l".into(),
            tail: "hi\nerr".into(),
        });
        assert_eq!(
            e.to_string(),
            "build.a failed with exit code 3; last lines of its log (/l):\nhi\nerr"
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
