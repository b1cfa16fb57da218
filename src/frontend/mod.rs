//! Frontends: other ways to say what to build, lowered to the [`Plan`]
//! the build runs, so they get the same sandbox, isolation levels, step
//! cache, `--cache-from/--cache-to`, `--push`, `--explain` and
//! reproducibility as a `shipyard.toml`.
//!
//! A Containerfile's stages become builders (`FROM stage` a builder made
//! from that stage's state), its `RUN`, `COPY` and `ADD` rules of them
//! (a copy is a rule whose action writes files instead of running a
//! command), `COPY --from=stage` a tapeout of that stage copied in, and
//! the target stage an image of its builder's state: the base's layers
//! and one layer per instruction that changed the filesystem, as buildah
//! and BuildKit make them.

mod containerfile;

pub use containerfile::{load, BaseTriggers, FrontendError, Options};
