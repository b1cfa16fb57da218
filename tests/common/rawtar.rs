//! Tar layers written byte by byte, so tests can build what no well-behaved
//! tar library would (hostile names, foreign owners, devices).

use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::image::{append_layer, empty_config, write_image};
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One raw ustar member.
#[derive(Debug, Clone)]
pub struct M {
    pub name: Vec<u8>,
    pub typ: u8,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub dev: (u64, u64),
    pub pax: Vec<(String, Vec<u8>)>,
    /// Raw bytes written over the header at these offsets before the
    /// checksum (base-256 numbers, sizes that disagree with the data).
    pub patch: Vec<(usize, Vec<u8>)>,
}

pub fn m(name: &[u8], typ: u8) -> M {
    M {
        name: name.to_vec(),
        typ,
        link: Vec::new(),
        data: Vec::new(),
        mode: if typ == b'5' { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        dev: (0, 0),
        pax: Vec::new(),
        patch: Vec::new(),
    }
}
pub fn file(name: &str, data: &[u8]) -> M {
    M {
        data: data.to_vec(),
        ..m(name.as_bytes(), b'0')
    }
}
pub fn dir(name: &str) -> M {
    m(name.as_bytes(), b'5')
}
pub fn symlink(name: &str, target: &str) -> M {
    M {
        link: target.as_bytes().to_vec(),
        ..m(name.as_bytes(), b'2')
    }
}
pub fn hardlink(name: &str, target: &str) -> M {
    M {
        link: target.as_bytes().to_vec(),
        ..m(name.as_bytes(), b'1')
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(mb: &M, name: &[u8], typ: u8, size: u64) -> [u8; 512] {
    let (link, mode) = (&mb.link[..], mb.mode);
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], mb.uid);
    octal(&mut h[116..124], mb.gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typ;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], mb.dev.0);
    octal(&mut h[337..345], mb.dev.1);
    for (at, bytes) in &mb.patch {
        h[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

pub fn tar(members: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for mb in members {
        if !mb.pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &mb.pax {
                let body = k.len() + v.len() + 3;
                let mut len = body + 1;
                while len != body + len.to_string().len() {
                    len = body + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {k}=").as_bytes());
                data.extend_from_slice(v);
                data.push(b'\n');
            }
            let px = M {
                link: Vec::new(),
                mode: 0o644,
                patch: Vec::new(),
                ..m(b"pax", b'x')
            };
            out.extend_from_slice(&header(&px, b"pax", b'x', data.len() as u64));
            out.extend_from_slice(&data);
            pad(&mut out);
        }
        out.extend_from_slice(&header(mb, &mb.name, mb.typ, mb.data.len() as u64));
        out.extend_from_slice(&mb.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// How a layer is stored: blob bytes, the descriptor's size, the diff_id.
pub struct RawLayer {
    pub blob: Vec<u8>,
    pub size: Option<u64>,
    pub diff_id: Option<Digest>,
}

pub fn layer(members: &[M]) -> RawLayer {
    let t = tar(members);
    RawLayer {
        diff_id: Some(Digest::of(&t)),
        blob: gzip(&t),
        size: None,
    }
}

/// Writes an image of raw layers and returns (layout dir, digests).
pub fn image(dir: &Path, layers: Vec<RawLayer>) -> (PathBuf, Vec<Digest>) {
    image_typed(dir, layers, oci_spec::image::MediaType::ImageLayerGzip)
}

/// [`image`] with every layer descriptor of `media_type`.
pub fn image_typed(
    dir: &Path,
    layers: Vec<RawLayer>,
    media_type: oci_spec::image::MediaType,
) -> (PathBuf, Vec<Digest>) {
    let l = dir.join("layout");
    let layout = Layout::open_or_create(&l).unwrap();
    let mut cfg = empty_config();
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for rl in layers {
        let d = Digest::of(&rl.blob);
        // Stored under its true digest; the corruption cases edit it after.
        let (d2, size) = layout.put_bytes(&rl.blob).unwrap();
        assert_eq!(d, d2);
        append_layer(
            &mut cfg,
            &rl.diff_id.unwrap_or(d.clone()),
            "1970-01-01T00:00:00Z",
            "test",
        );
        descs.push(oci_spec::image::Descriptor::new(
            media_type.clone(),
            rl.size.unwrap_or(size),
            media::to_spec_digest(&d),
        ));
        digests.push(d);
    }
    let desc = write_image(&layout, &cfg, descs).unwrap();
    layout.tag("t", &desc).unwrap();
    (l, digests)
}

/// The 512-byte header of `mb` claiming `size` bytes of data, for tests
/// that stream a member's data themselves (too large to hold).
pub fn header_block(mb: &M, size: u64) -> [u8; 512] {
    header(mb, &mb.name, mb.typ, size)
}

/// A layer whose tar is produced by `write_tar` as a stream: only the
/// gzip bytes are held (a highly compressible tar of gigabytes stays
/// small), and the diff_id is hashed on the way. Each MiB is its own gzip
/// member (layer readers accept multi-member streams), and a MiB equal to
/// the previous one reuses its compressed bytes, so repetitive streams of
/// any length cost little to make.
pub fn streamed_layer(write_tar: impl FnOnce(&mut dyn Write)) -> RawLayer {
    use sha2::Digest as _;
    const CHUNK: usize = 1 << 20;
    struct Tee {
        buf: Vec<u8>,
        last: (Vec<u8>, Vec<u8>),
        out: Vec<u8>,
        hash: sha2::Sha256,
    }
    impl Tee {
        fn chunk(&mut self, n: usize) {
            let part: Vec<u8> = self.buf.drain(..n).collect();
            if part != self.last.0 {
                self.last = (part.clone(), gzip(&part));
            }
            self.out.extend_from_slice(&self.last.1);
        }
    }
    impl Write for Tee {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.hash.update(b);
            self.buf.extend_from_slice(b);
            while self.buf.len() >= CHUNK {
                self.chunk(CHUNK);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut tee = Tee {
        buf: Vec::new(),
        last: (Vec::new(), Vec::new()),
        out: Vec::new(),
        hash: sha2::Sha256::new(),
    };
    write_tar(&mut tee);
    let rest = tee.buf.len();
    tee.chunk(rest);
    let diff_id: Digest = format!("sha256:{}", hex::encode(tee.hash.finalize()))
        .parse()
        .unwrap();
    RawLayer {
        blob: tee.out,
        size: None,
        diff_id: Some(diff_id),
    }
}
