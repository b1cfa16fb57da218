//! Layer compression: gzip (parallel members compressed by libdeflate, see
//! `pgzip`), zstd or none, as one streaming writer, and the matching
//! decoders for reading (flate2 with the zlib-rs backend for gzip).

use crate::oci::media::LayerEncoding;
use oci_spec::image::MediaType;
use std::io::{self, BufRead, BufReader, Read, Write};

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
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
    Gzip(super::pgzip::ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Encoder<W> {
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
    Ok(match enc {
        // Multi-member: parallel gzip writers emit several members.
        LayerEncoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        LayerEncoding::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        _ => Box::new(br),
    })
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
}
