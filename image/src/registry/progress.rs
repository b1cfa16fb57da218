//! Transfer progress: bars (bytes, rate, ETA per blob and overall) when
//! stderr is a terminal, one plain line per finished blob otherwise, and
//! nothing with `--quiet`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Read};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Nothing (`--quiet`, or output is not for a person).
    Quiet,
    /// One line per blob, for logs.
    Lines,
    /// Progress bars, on a terminal.
    Bars,
}

impl Verbosity {
    /// Bars on a terminal, lines otherwise.
    pub fn detect(quiet: bool) -> Verbosity {
        if quiet {
            Verbosity::Quiet
        } else if std::io::stderr().is_terminal() {
            Verbosity::Bars
        } else {
            Verbosity::Lines
        }
    }
}

/// The progress of one command.
pub struct Progress {
    mode: Verbosity,
    multi: MultiProgress,
    total: ProgressBar,
}

/// The progress of one blob.
pub(crate) struct Task {
    bar: ProgressBar,
    total: ProgressBar,
    mode: Verbosity,
    label: String,
}

impl Progress {
    /// A display for transfers in `mode`.
    pub fn new(mode: Verbosity) -> Progress {
        let multi = MultiProgress::with_draw_target(if mode == Verbosity::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Progress { mode, multi, total }
    }

    /// Adds `bytes` to the overall total (call once per blob to move).
    pub fn expect(&self, bytes: u64) {
        self.total.inc_length(bytes);
    }

    /// Starts a blob transfer: `verb` is "Copying", "Pushing", …
    pub(crate) fn task(&self, verb: &str, digest: &str, size: u64) -> Task {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let short: String = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        bar.set_prefix(verb.to_string());
        bar.set_message(short.clone());
        Task {
            bar,
            total: self.total.clone(),
            mode: self.mode,
            label: format!("{verb} blob {short}"),
        }
    }

    /// Clears the bars; call when the transfer is over.
    pub fn finish(&self) {
        self.total.finish_and_clear();
    }
}

impl Task {
    /// A retry starts the blob again: take back what it had counted.
    pub fn reset(&self) {
        let done = self.bar.position();
        self.bar.set_position(0);
        self.total
            .set_position(self.total.position().saturating_sub(done));
    }

    /// Ends the blob with an outcome ("done", "skipped: exists", …).
    pub fn done(self, outcome: &str) {
        let rest = self.bar.length().unwrap_or(0)
            - self.bar.position().min(self.bar.length().unwrap_or(0));
        self.total.inc(rest);
        self.bar.finish_and_clear();
        if self.mode == Verbosity::Lines {
            eprintln!(
                "{} ({}): {outcome}",
                self.label,
                human(self.bar.length().unwrap_or(0))
            );
        }
    }

    /// Wraps a reader so what it reads is counted.
    pub fn reader<R: Read>(&self, inner: R) -> CountingReader<R> {
        CountingReader {
            inner,
            bar: self.bar.clone(),
            total: self.total.clone(),
        }
    }
}

/// A reader that advances a task's bars.
pub(crate) struct CountingReader<R> {
    inner: R,
    bar: ProgressBar,
    total: ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        self.total.inc(n as u64);
        Ok(n)
    }
}

/// Sizes the way people read them.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
