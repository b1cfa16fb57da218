//! Layer compression: gzip (parallel members compressed by libdeflate, see
//! `pgzip`), zstd or none, as one streaming writer, and the matching
//! decoders for reading (flate2 with the zlib-rs backend for gzip, zstd),
//! which decompress on a thread of their own (`Inflater`).

use crate::oci::media::LayerEncoding;
use oci_spec::image::MediaType;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc;

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Parallel gzip (libdeflate), the default: every runtime reads it.
    Gzip,
    /// zstd: smaller and faster to decompress, read by newer runtimes only.
    Zstd,
    /// Uncompressed, for layers that are compressed again later (archives, caches).
    None,
}

impl Compression {
    /// The OCI layer media type that says this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
            Compression::None => MediaType::ImageLayer,
        }
    }

    /// The level used when none is given. gzip 3: with libdeflate, the
    /// cheapest level whose layers are still smaller than buildah's default
    /// gzip (and about those of zlib's conventional `-6`); zstd 3, zstd's
    /// own default. Measured in docs/benchmarks.md.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 3,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
}

/// A zstd encoder on `workers` threads. With any worker count >= 1 zstd's
/// output is identical (tested below), so the cores are used without
/// making digests machine-dependent.
fn zstd_encoder<W: Write>(
    inner: W,
    level: i32,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
    enc.multithread(workers.max(1))?;
    enc.include_checksum(false)?;
    Ok(enc)
}

/// A compressing writer. `finish` must be called to write the trailer.
pub enum Encoder<W: Write> {
    /// gzip, one member per MiB compressed in parallel.
    Gzip(super::pgzip::ParallelGzip<W>),
    /// zstd on the machine's cores (output independent of their number).
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// No compression.
    None(W),
}

impl<W: Write> Encoder<W> {
    /// Starts compressing into `inner` at `level` (else [`Compression::default_level`]).
    pub fn new(inner: W, c: Compression, level: Option<i32>) -> io::Result<Self> {
        let level = level.unwrap_or(c.default_level());
        Ok(match c {
            // Parallel, one gzip member per MiB; the header carries no file
            // name, no mtime and a fixed OS byte: the same on every machine.
            Compression::Gzip => Encoder::Gzip(super::pgzip::ParallelGzip::new(
                inner,
                level.clamp(0, 12) as u32,
            )),
            Compression::Zstd => Encoder::Zstd(zstd_encoder(
                inner,
                level,
                std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
            )?),
            Compression::None => Encoder::None(inner),
        })
    }

    /// Writes the trailer and returns the inner writer; without it the stream is truncated.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// Wraps a compressed layer stream in the right decoder. With
/// [`LayerEncoding::Sniff`] the magic bytes decide.
pub fn decoder<'a, R: Read + 'a>(r: R, enc: LayerEncoding) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let enc = match enc {
        LayerEncoding::Sniff => {
            let head = br.fill_buf()?;
            if head.starts_with(&[0x1f, 0x8b]) {
                LayerEncoding::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                LayerEncoding::Zstd
            } else {
                LayerEncoding::Plain
            }
        }
        e => e,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(match enc {
        // Multi-member: parallel gzip writers emit several members.
        LayerEncoding::Gzip if cores > 1 => Box::new(Inflater::spawn(br, |input| {
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
        })),
        LayerEncoding::Zstd if cores > 1 => Box::new(Inflater::spawn(br, |input| {
            Ok(Box::new(zstd::stream::read::Decoder::with_buffer(input)?))
        })),
        LayerEncoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        LayerEncoding::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        _ => Box::new(br),
    })
}

/// Compressed bytes read ahead of the decompressor, per message.
const INPUT_CHUNK: usize = 256 * 1024;
/// Compressed chunks queued for the decompressor (1 MiB).
const INPUT_QUEUE: usize = 4;
/// Decompressed pieces queued for the reader.
const OUTPUT_QUEUE: usize = 8;
/// Bytes of output the decompressor asks for per call.
const OUTPUT_PIECE: usize = 256 * 1024;

type Piece = io::Result<Vec<u8>>;

/// Decompresses on a thread of its own while the caller consumes the
/// output: unpacking a layer is inflate on one side and file creation
/// (plus the tar stream's hash) on the other, so on two cores the two
/// overlap instead of taking turns. The compressed source stays on the
/// caller's thread (it is often a borrowed, hashing reader) and is fed to
/// the worker in chunks; memory is bounded by the two queues, about 3 MiB.
///
/// Never deadlocks: the caller blocks on output only when the input queue
/// is full or closed, and the worker hands over every piece as soon as the
/// decompressor returns it, so it only waits for input when it has
/// produced nothing it could send.
struct Inflater<R: Read> {
    src: R,
    /// A chunk read from `src` that did not fit in the input queue yet.
    unsent: Option<Vec<u8>>,
    to_worker: Option<mpsc::SyncSender<Vec<u8>>>,
    from_worker: Option<mpsc::Receiver<Piece>>,
    /// Spent output buffers, handed back for reuse.
    recycle: Option<mpsc::Sender<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    worker: Option<std::thread::JoinHandle<()>>,
}

type MakeDecoder = fn(BufReader<QueueReader>) -> io::Result<Box<dyn Read + Send>>;

impl<R: Read> Inflater<R> {
    fn spawn(src: R, make: MakeDecoder) -> Self {
        let (to_worker, input) = mpsc::sync_channel::<Vec<u8>>(INPUT_QUEUE);
        let (output, from_worker) = mpsc::sync_channel::<Piece>(OUTPUT_QUEUE);
        let (recycle, spent) = mpsc::channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            let queue = QueueReader {
                rx: input,
                cur: Vec::new(),
                pos: 0,
            };
            let mut dec = match make(BufReader::with_capacity(INPUT_CHUNK, queue)) {
                Ok(d) => d,
                Err(e) => {
                    let _ = output.send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = spent.try_recv().unwrap_or_default();
                buf.resize(OUTPUT_PIECE, 0);
                match dec.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if output.send(Ok(buf)).is_err() {
                            return; // the reader went away
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = output.send(Err(e));
                        return;
                    }
                }
            }
        });
        Self {
            src,
            unsent: None,
            to_worker: Some(to_worker),
            from_worker: Some(from_worker),
            recycle: Some(recycle),
            cur: Vec::new(),
            pos: 0,
            worker: Some(worker),
        }
    }

    /// Moves compressed input to the worker until its queue is full or
    /// closed: after that, waiting for output cannot starve the worker.
    fn feed(&mut self) -> io::Result<()> {
        loop {
            let Some(tx) = self.to_worker.as_ref() else {
                return Ok(());
            };
            let chunk = match self.unsent.take() {
                Some(c) => c,
                None => {
                    let mut c = vec![0; INPUT_CHUNK];
                    let n = loop {
                        match self.src.read(&mut c) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    };
                    if n == 0 {
                        // End of input: closing the queue tells the worker.
                        self.to_worker = None;
                        return Ok(());
                    }
                    c.truncate(n);
                    c
                }
            };
            match tx.try_send(chunk) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(c)) => {
                    self.unsent = Some(c);
                    return Ok(());
                }
                // The worker stopped (done or failed): its output says why.
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    self.to_worker = None;
                    return Ok(());
                }
            }
        }
    }
}

impl<R: Read> Read for Inflater<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = out.len().min(self.cur.len() - self.pos);
                out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let Some(rx) = self.from_worker.as_ref() else {
                return Ok(0);
            };
            let piece = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::TryRecvError::Disconnected) => None,
                Err(mpsc::TryRecvError::Empty) => {
                    self.feed()?;
                    // The worker has all the input it may take: wait.
                    self.from_worker.as_ref().and_then(|rx| rx.recv().ok())
                }
            };
            match piece {
                Some(p) => {
                    let spent = std::mem::replace(&mut self.cur, p?);
                    if let Some(r) = self.recycle.as_ref() {
                        let _ = r.send(spent);
                    }
                    self.pos = 0;
                }
                None => {
                    // The worker finished. A stream that ended before its
                    // input did leaves the rest to the caller's checks.
                    self.from_worker = None;
                    return Ok(0);
                }
            }
        }
    }
}

impl<R: Read> Drop for Inflater<R> {
    fn drop(&mut self) {
        // Closing both queues unblocks the worker wherever it waits.
        self.to_worker = None;
        self.from_worker = None;
        self.recycle = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The worker's side of the input queue, as a reader; a closed queue is
/// the end of the stream.
struct QueueReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for QueueReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// xz's stream header magic.
pub const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

/// `f` decoded when `head` (its first bytes) says xz or bzip2: archives
/// a Containerfile's `ADD` unpacks, as Docker does (layers never come in
/// these; [`decoder`] does not take them). Other files as they are.
pub fn archive_decoder<'a>(f: std::fs::File, head: &[u8]) -> Box<dyn std::io::Read + 'a> {
    let r = std::io::BufReader::new(f);
    if head.starts_with(XZ_MAGIC) {
        Box::new(lzma_rust2::XzReader::new(r, true))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else {
        Box::new(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_output_is_the_same_whatever_the_worker_count() {
        // Several of zstd's jobs' worth, part compressible, part not.
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| {
                if (i >> 20) % 2 == 0 {
                    (i % 251) as u8
                } else {
                    (i.wrapping_mul(2654435761) >> 13) as u8
                }
            })
            .collect();
        let run = |workers| {
            let mut e = zstd_encoder(Vec::new(), 1, workers).unwrap();
            for part in data.chunks(100_003) {
                e.write_all(part).unwrap();
            }
            e.finish().unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(4));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    /// Several MiB of part-compressible data: many input chunks and output
    /// pieces, so both queues fill up and wait on each other.
    fn sample() -> Vec<u8> {
        (0..(5u32 << 20) + 4321)
            .map(|i| {
                if (i >> 18) % 3 == 0 {
                    (i.wrapping_mul(2654435761) >> 13) as u8
                } else {
                    (i % 97) as u8
                }
            })
            .collect()
    }

    fn encode(data: &[u8], c: Compression) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), c, Some(1)).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads in odd-sized pieces, as the tar reader does.
    fn decode(blob: &[u8], enc: LayerEncoding) -> io::Result<Vec<u8>> {
        let mut d = decoder(blob, enc)?;
        let mut out = Vec::new();
        let mut buf = vec![0; 7001];
        loop {
            let n = d.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn decoders_return_exactly_what_was_encoded() {
        let data = sample();
        for (c, enc) in [
            (Compression::Gzip, LayerEncoding::Gzip),
            (Compression::Gzip, LayerEncoding::Sniff),
            (Compression::Zstd, LayerEncoding::Zstd),
            (Compression::Zstd, LayerEncoding::Sniff),
            (Compression::None, LayerEncoding::Sniff),
        ] {
            let blob = encode(&data, c);
            assert!(decode(&blob, enc).unwrap() == data, "{c:?} read as {enc:?}");
        }
        for c in [Compression::Gzip, Compression::Zstd] {
            assert!(decode(&encode(&[], c), LayerEncoding::Sniff)
                .unwrap()
                .is_empty());
        }
    }

    #[test]
    fn a_truncated_or_corrupt_stream_is_an_error_not_a_short_read() {
        let data = sample();
        for c in [Compression::Gzip, Compression::Zstd] {
            let blob = encode(&data, c);
            let cut = &blob[..blob.len() * 2 / 3];
            assert!(
                decode(cut, LayerEncoding::Sniff).is_err(),
                "{c:?} truncated"
            );
        }
        // gzip members carry a CRC (our zstd frames do not: there the
        // layer's diff_id check catches it).
        let mut bad = encode(&data, Compression::Gzip);
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 64] {
            *b ^= 0x5a;
        }
        assert!(decode(&bad, LayerEncoding::Gzip).is_err());
    }

    #[test]
    fn dropping_a_decoder_half_way_returns() {
        // The caller stops reading (an extraction error): the worker must
        // not stay blocked on a full queue, and the drop must not hang.
        let blob = encode(&sample(), Compression::Gzip);
        for stop_after in [0usize, 1, 5, 300] {
            let mut d = decoder(&blob[..], LayerEncoding::Gzip).unwrap();
            let mut buf = vec![0; 4096];
            for _ in 0..stop_after {
                d.read_exact(&mut buf).unwrap();
            }
            drop(d);
        }
    }
}
