//! Transfer progress as events. The library never draws anything: pulls
//! and pushes report what happens to each blob to a [`Sink`] the caller
//! supplies (a command line draws bars or prints lines, an embedding
//! program logs or ignores them), so what a person sees is decided where
//! it is known who is watching. The default sink ignores everything.

use crate::oci::digest::Digest;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which way a blob moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// From a registry into the local cache.
    Pull,
    /// From a layout to a registry.
    Push,
}

/// How a blob's transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its bytes moved.
    Done,
    /// The destination had it already; nothing moved.
    AlreadyPresent,
    /// The registry mounted it from another repository (named here)
    /// instead of taking an upload.
    MountedFrom(String),
}

/// One blob of a transfer, as a [`Sink`] is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Tells concurrent blobs apart: unique among the blobs one
    /// [`Progress`] (and its clones) reports, even when a digest moves
    /// twice (pulled, then pushed).
    pub id: u64,
    /// Which way it moves.
    pub action: Action,
    /// What it is.
    pub digest: Digest,
    /// Its size in bytes, as its descriptor says.
    pub size: u64,
}

/// Receives transfer events. Blobs move on several threads at once, so
/// events of different blobs interleave; those of one blob come in order:
/// `started`, `advanced`/`restarted` any number of times, `finished`
/// (not at all when the transfer fails). Every method does nothing by
/// default.
pub trait Sink: Send + Sync {
    /// The transfer will move `bytes` more in all (once per blob, before
    /// blobs start), for an overall total.
    fn expect(&self, bytes: u64) {
        let _ = bytes;
    }
    /// `blob` starts moving.
    fn started(&self, blob: &Blob) {
        let _ = blob;
    }
    /// `bytes` more of `blob` have moved. Not every transfer reports its
    /// bytes as they go: [`Sink::finished`] stands for whatever is left.
    fn advanced(&self, blob: &Blob, bytes: u64) {
        let _ = (blob, bytes);
    }
    /// `blob` failed part way and starts again from its first byte:
    /// what was reported of it is to be taken back.
    fn restarted(&self, blob: &Blob) {
        let _ = blob;
    }
    /// `blob` is where it should be.
    fn finished(&self, blob: &Blob, outcome: &Outcome) {
        let _ = (blob, outcome);
    }
    /// The transfer is over (successfully or not); a later transfer on
    /// the same sink starts a new total.
    fn ended(&self) {}
}

/// The sink that ignores everything.
struct Silent;

impl Sink for Silent {}

/// A handle that pulls and pushes report through: cheap to clone, shared
/// by the threads of one transfer. [`Progress::default`] reports nowhere.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn Sink>,
    next_id: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(Arc::new(Silent))
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// The progress of one blob.
pub(crate) struct Task {
    sink: Arc<dyn Sink>,
    blob: Blob,
}

impl Progress {
    /// Reports to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Progress {
        Progress {
            sink,
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds `bytes` to the overall total (call once per blob to move).
    pub fn expect(&self, bytes: u64) {
        self.sink.expect(bytes);
    }

    /// Starts a blob transfer.
    pub(crate) fn task(&self, action: Action, digest: &Digest, size: u64) -> Task {
        let blob = Blob {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            action,
            digest: digest.clone(),
            size,
        };
        self.sink.started(&blob);
        Task {
            sink: self.sink.clone(),
            blob,
        }
    }

    /// Says the transfer is over.
    pub fn finish(&self) {
        self.sink.ended();
    }
}

impl Task {
    /// A retry starts the blob again: take back what it had counted.
    pub fn reset(&self) {
        self.sink.restarted(&self.blob);
    }

    /// Ends the blob with `outcome`.
    pub fn done(self, outcome: Outcome) {
        self.sink.finished(&self.blob, &outcome);
    }

    /// Wraps a reader so what it reads is reported.
    pub fn reader<R: Read>(&self, inner: R) -> CountingReader<'_, R> {
        CountingReader { inner, task: self }
    }
}

/// A reader that reports its task's bytes as they are read.
pub(crate) struct CountingReader<'a, R> {
    inner: R,
    task: &'a Task,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.task.sink.advanced(&self.task.blob, n as u64);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::oci::media;
    use crate::registry::client::{Client, Options};
    use crate::registry::pull::{fetch_blob, Counters};
    use oci_spec::image::{Descriptor, MediaType};
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// Writes down every event, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        fn events(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Sink for Recorder {
        fn started(&self, b: &Blob) {
            self.push(format!("started {} {:?} {}", b.id, b.action, b.size));
        }
        fn advanced(&self, b: &Blob, bytes: u64) {
            self.push(format!("advanced {} {bytes}", b.id));
        }
        fn restarted(&self, b: &Blob) {
            self.push(format!("restarted {}", b.id));
        }
        fn finished(&self, b: &Blob, o: &Outcome) {
            self.push(format!("finished {} {o:?}", b.id));
        }
    }

    /// A registry that serves `blob` to GETs, the first one cut short
    /// after half its bytes, and drops anything else (the TLS probe).
    fn serve(blob: Vec<u8>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let mut gets = 0;
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                    if !head.starts_with(&b"GET "[..head.len().min(4)]) {
                        break;
                    }
                }
                if !head.starts_with(b"GET /v2/test/blobs/") {
                    continue;
                }
                gets += 1;
                let body = if gets == 1 {
                    &blob[..blob.len() / 2]
                } else {
                    &blob[..]
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    blob.len()
                );
                let _ = c.write_all(body);
            }
        });
        addr
    }

    #[test]
    fn a_pull_reports_each_blob_to_the_callers_sink() {
        let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&blob);
        let desc = Descriptor::new(
            MediaType::ImageLayerGzip,
            blob.len() as u64,
            media::to_spec_digest(&digest),
        );
        let addr = serve(blob.clone());
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            tls_verify: false,
            authfile: Some(dir.path().join("no-auth.json")),
            retries: 0,
            ..Options::default()
        };
        let client = Client::new(&addr, &addr, &opts).unwrap();
        let cache = Cache::at(dir.path().join("cache")).unwrap();
        let rec = Arc::new(Recorder::default());
        let progress = Progress::new(rec.clone());
        fetch_blob(
            &client,
            "test",
            &desc,
            &cache,
            &progress,
            &Counters::default(),
        )
        .unwrap();
        assert_eq!(cache.layout.read_blob(&digest, None).unwrap(), blob);

        let events = rec.events();
        assert_eq!(events.first().unwrap(), "started 0 Pull 100000");
        assert_eq!(events.last().unwrap(), "finished 0 Done");
        // The cut-short first attempt is taken back once, and what the
        // second one reports adds up to the whole blob.
        let restart = events.iter().position(|e| e == "restarted 0").unwrap();
        assert_eq!(events.iter().filter(|e| *e == "restarted 0").count(), 1);
        let counted: u64 = events[restart..]
            .iter()
            .filter_map(|e| e.strip_prefix("advanced 0 "))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, blob.len() as u64, "{events:?}");

        // A blob already in the cache moves nothing and reports nothing.
        let again = Arc::new(Recorder::default());
        fetch_blob(
            &client,
            "test",
            &desc,
            &cache,
            &Progress::new(again.clone()),
            &Counters::default(),
        )
        .unwrap();
        assert_eq!(again.events(), Vec::<String>::new());
    }

    #[test]
    fn blobs_of_one_transfer_get_distinct_ids() {
        let rec = Arc::new(Recorder::default());
        let p = Progress::new(rec.clone());
        let d = Digest::of(b"x");
        let a = p.task(Action::Push, &d, 1);
        let b = p.clone().task(Action::Push, &d, 1);
        b.done(Outcome::AlreadyPresent);
        a.done(Outcome::MountedFrom("lib/base".into()));
        assert_eq!(
            rec.events(),
            [
                "started 0 Push 1",
                "started 1 Push 1",
                "finished 1 AlreadyPresent",
                "finished 0 MountedFrom(\"lib/base\")"
            ]
        );
    }
}
