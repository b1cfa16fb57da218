//! What a person sees of transfers: bars (bytes, rate, ETA per blob and
//! overall) when stderr is a terminal, one plain line per finished blob
//! otherwise, and nothing with `--quiet`. The image library only reports
//! events ([`Sink`]); drawing them is decided here, where it is known who
//! is watching.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shipyard_image::registry::progress::{human, Action, Blob, Outcome, Progress, Sink};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, MutexGuard};

/// The progress handle for a command: silent with `quiet`, bars on a
/// terminal, lines otherwise.
pub fn for_stderr(quiet: bool) -> Progress {
    if quiet {
        Progress::default()
    } else if std::io::stderr().is_terminal() {
        Progress::new(Arc::new(Bars::default()))
    } else {
        Progress::new(Arc::new(Lines))
    }
}

/// The word a blob's line and bar start with.
fn verb(a: Action) -> &'static str {
    match a {
        Action::Pull => "Copying",
        Action::Push => "Pushing",
    }
}

/// The first 12 hex digits: enough to tell a command's blobs apart.
fn short(b: &Blob) -> String {
    b.digest
        .to_string()
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// How a blob ended, as its line says it.
fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Done => "done".into(),
        Outcome::AlreadyPresent => "skipped: already present".into(),
        Outcome::MountedFrom(repo) => format!("mounted from {repo}"),
    }
}

/// The line a finished blob gets in a log: `Pushing blob 0123456789ab
/// (1.0 MiB): done`.
fn line(b: &Blob, o: &Outcome) -> String {
    format!(
        "{} blob {} ({}): {}",
        verb(b.action),
        short(b),
        human(b.size),
        outcome_text(o)
    )
}

/// One line on stderr per finished blob, for logs.
struct Lines;

impl Sink for Lines {
    fn finished(&self, blob: &Blob, outcome: &Outcome) {
        eprintln!("{}", line(blob, outcome));
    }
}

/// Bars on a terminal: one per blob in flight above an overall total.
#[derive(Default)]
struct Bars {
    /// The bars of the transfer under way; none between transfers.
    state: Mutex<Option<Drawing>>,
}

struct Drawing {
    multi: MultiProgress,
    total: ProgressBar,
    blobs: HashMap<u64, ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Drawing {
    fn new() -> Drawing {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ));
        total.set_prefix("total");
        Drawing {
            multi,
            total,
            blobs: HashMap::new(),
        }
    }
}

impl Bars {
    /// The drawing of the transfer under way, started by its first event.
    /// A panic elsewhere while drawing leaves nothing worth refusing.
    fn drawing(&self) -> MutexGuard<'_, Option<Drawing>> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(Drawing::new);
        g
    }
}

impl Sink for Bars {
    fn expect(&self, bytes: u64) {
        if let Some(d) = self.drawing().as_mut() {
            d.total.inc_length(bytes);
        }
    }

    fn started(&self, blob: &Blob) {
        if let Some(d) = self.drawing().as_mut() {
            let bar = d.multi.insert_before(&d.total, ProgressBar::new(blob.size));
            bar.set_style(style(
                "{prefix:>8} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ));
            bar.set_prefix(verb(blob.action));
            bar.set_message(short(blob));
            d.blobs.insert(blob.id, bar);
        }
    }

    fn advanced(&self, blob: &Blob, bytes: u64) {
        if let Some(d) = self.drawing().as_ref() {
            if let Some(bar) = d.blobs.get(&blob.id) {
                bar.inc(bytes);
                d.total.inc(bytes);
            }
        }
    }

    fn restarted(&self, blob: &Blob) {
        if let Some(d) = self.drawing().as_ref() {
            if let Some(bar) = d.blobs.get(&blob.id) {
                let counted = bar.position();
                bar.set_position(0);
                d.total
                    .set_position(d.total.position().saturating_sub(counted));
            }
        }
    }

    fn finished(&self, blob: &Blob, _outcome: &Outcome) {
        if let Some(d) = self.drawing().as_mut() {
            if let Some(bar) = d.blobs.remove(&blob.id) {
                d.total
                    .inc(blob.size.saturating_sub(bar.position().min(blob.size)));
                bar.finish_and_clear();
            }
        }
    }

    fn ended(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = g.take() {
            d.total.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(action: Action, size: u64) -> Blob {
        Blob {
            id: 0,
            action,
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap(),
            size,
        }
    }

    #[test]
    fn lines_say_what_each_blob_did_as_before() {
        assert_eq!(
            line(&blob(Action::Push, 1 << 20), &Outcome::Done),
            "Pushing blob 0123456789ab (1.0 MiB): done"
        );
        assert_eq!(
            line(&blob(Action::Push, 10), &Outcome::AlreadyPresent),
            "Pushing blob 0123456789ab (10 B): skipped: already present"
        );
        assert_eq!(
            line(
                &blob(Action::Push, 2048),
                &Outcome::MountedFrom("base/img".into())
            ),
            "Pushing blob 0123456789ab (2.0 KiB): mounted from base/img"
        );
        assert_eq!(
            line(&blob(Action::Pull, 1536), &Outcome::Done),
            "Copying blob 0123456789ab (1.5 KiB): done"
        );
    }
}
