//! The rootfs manifest: the sorted entries of a tree or image, and its
//! versioned text format (documented in `docs/manifest-format.md`).
//!
//! One line per entry, path first, then `key=value` fields in a fixed order,
//! so `diff -u` of two manifests reads like a change list. Bytes outside
//! printable ASCII, space, `\`, `=` and `#` are written as `\xHH`, so any path,
//! link target or xattr round-trips exactly.

use super::entry::{Entry, Kind, Mtime, RelPath};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

/// The first line of every manifest; a reader refuses text without it, and a
/// newer version, rather than misread it.
pub const HEADER: &str = "#shipyard-manifest v1";

#[derive(Debug, thiserror::Error)]
/// Why a manifest could not be read.
pub enum ManifestError {
    #[error("{source_name}:{line}: {msg}")]
    /// A line that is not an entry.
    Parse {
        /// Where the manifest came from (a file name), for the message.
        source_name: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },
    #[error("{0}: not a shipyard manifest (first line must be {HEADER:?})")]
    /// The text does not start with [`HEADER`].
    NoHeader(String),
    #[error(
        "{0}: manifest format {1:?} is newer than this shipyard understands (v1); upgrade shipyard"
    )]
    /// A manifest format newer than this reader.
    Version(String, String),
    #[error(transparent)]
    /// The manifest could not be read or written.
    Io(#[from] io::Error),
}

/// Entries keyed by path, in tree order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every entry, keyed by path (tree order: a directory before its contents).
    pub entries: BTreeMap<RelPath, Entry>,
}

impl Manifest {
    /// The entry at `p`, if any.
    pub fn get(&self, p: &RelPath) -> Option<&Entry> {
        self.entries.get(p)
    }

    /// Adds `e`, replacing any entry at its path.
    pub fn insert(&mut self, e: Entry) {
        self.entries.insert(e.path.clone(), e);
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes `p` and everything beneath it.
    pub fn remove_tree(&mut self, p: &RelPath) {
        let doomed: Vec<RelPath> = self
            .entries
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Direct and indirect children of `dir` (not `dir` itself).
    pub fn children_of<'a>(&'a self, dir: &'a RelPath) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .range(dir.clone()..)
            .take_while(move |(k, _)| k.starts_with(dir))
            .filter(move |(k, _)| *k != dir)
            .map(|(_, e)| e)
    }

    /// Writes the text form.
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        writeln!(w, "{HEADER}")?;
        let mut line = Vec::with_capacity(256);
        for e in self.entries.values() {
            line.clear();
            format_entry(e, &mut line);
            line.push(b'\n');
            w.write_all(&line)?;
        }
        w.flush()
    }

    /// The manifest as text, as [`Manifest::write_to`] writes it.
    pub fn to_text(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut v);
        v
    }

    /// Parses the text form. `source_name` is used in error messages.
    pub fn parse(r: impl BufRead, source_name: &str) -> Result<Manifest, ManifestError> {
        let mut m = Manifest::default();
        let mut lines = r.split(b'\n');
        let first = lines.next().transpose()?.unwrap_or_default();
        let first = String::from_utf8_lossy(&first).trim_end().to_string();
        if !first.starts_with("#shipyard-manifest ") {
            return Err(ManifestError::NoHeader(source_name.to_string()));
        }
        if first != HEADER {
            return Err(ManifestError::Version(
                source_name.to_string(),
                first["#shipyard-manifest ".len()..].to_string(),
            ));
        }
        for (i, line) in lines.enumerate() {
            let line = line?;
            let lineno = i + 2;
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let e = parse_entry(&line).map_err(|msg| ManifestError::Parse {
                source_name: source_name.to_string(),
                line: lineno,
                msg,
            })?;
            m.insert(e);
        }
        Ok(m)
    }
}

/// Appends `bytes` to `out` with every byte that is not printable ASCII (and
/// `\`, `=` and `#`, which the format uses) written as `\xHH`, so a path
/// with spaces or newlines stays one field of one line.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b.is_ascii_graphic() && !matches!(b, b'\\' | b'=' | b'#') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

/// A `\\` in a manifest field that is not followed by `xHH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad escape at byte {at}: expected \\xHH")]
pub struct EscapeError {
    /// Where the escape starts.
    pub at: usize,
}

/// Reverses [`escape_into`].
pub fn unescape(s: &[u8]) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            let hex = s
                .get(i + 1..i + 4)
                .filter(|h| h[0] == b'x')
                .and_then(|h| std::str::from_utf8(&h[1..]).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(EscapeError { at: i })?;
            out.push(hex);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn format_entry(e: &Entry, out: &mut Vec<u8>) {
    out.push(b'/');
    escape_into(e.path.as_bytes(), out);
    let mut field = |k: &str, v: &str| {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
    };
    field("type", e.kind.as_str());
    field("mode", &format!("{:04o}", e.mode));
    field("uid", &e.uid.to_string());
    field("gid", &e.gid.to_string());
    if e.kind == Kind::File {
        field("size", &e.size.to_string());
    }
    match e.mtime.nsec {
        Some(ns) if ns != 0 => field("mtime", &format!("{}.{:09}", e.mtime.sec, ns)),
        _ => field("mtime", &e.mtime.sec.to_string()),
    }
    if let Some((ma, mi)) = e.rdev {
        field("rdev", &format!("{ma},{mi}"));
    }
    if let Some(sha) = &e.sha256 {
        field("sha256", &hex::encode(sha));
    }
    if let Some(l) = &e.link {
        out.extend_from_slice(b" link=");
        escape_into(l, out);
    }
    for (k, v) in &e.xattrs {
        out.extend_from_slice(b" xattr.");
        escape_into(k, out);
        out.push(b'=');
        escape_into(v, out);
    }
}

fn parse_entry(line: &[u8]) -> Result<Entry, String> {
    let mut parts = line.split(|b| *b == b' ').filter(|p| !p.is_empty());
    let path = parts.next().ok_or("empty line")?;
    let path = path.strip_prefix(b"/").ok_or("path must start with '/'")?;
    let path = unescape(path).map_err(|e| e.to_string())?;
    let path = RelPath::new(path.strip_suffix(b"/").unwrap_or(&path).to_vec());
    let mut e = Entry::new(path, Kind::File);
    let mut have_type = false;
    for p in parts {
        let eq = p
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| format!("field {:?} has no '='", String::from_utf8_lossy(p)))?;
        let (k, v) = (&p[..eq], &p[eq + 1..]);
        let vs = || String::from_utf8_lossy(v).into_owned();
        let num = |what: &str| -> Result<u64, String> {
            vs().parse::<u64>()
                .map_err(|_| format!("{what}: {:?} is not a number", vs()))
        };
        match k {
            b"type" => {
                e.kind = Kind::parse(&vs()).ok_or_else(|| format!("unknown type {:?}", vs()))?;
                have_type = true;
            }
            b"mode" => {
                e.mode = u32::from_str_radix(&vs(), 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("mode: {:?} is not an octal mode", vs()))?
            }
            b"uid" => e.uid = num("uid")?,
            b"gid" => e.gid = num("gid")?,
            b"size" => e.size = num("size")?,
            b"mtime" => {
                let s = vs();
                let (sec, ns) = match s.split_once('.') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (s.clone(), None),
                };
                e.mtime = Mtime {
                    sec: sec.parse().map_err(|_| format!("mtime: {s:?}"))?,
                    nsec: match ns {
                        Some(n) => Some(n.parse().map_err(|_| format!("mtime: {s:?}"))?),
                        None => None,
                    },
                };
            }
            b"rdev" => {
                let s = vs();
                let (a, b) = s.split_once(',').ok_or_else(|| format!("rdev: {s:?}"))?;
                e.rdev = Some((
                    a.parse().map_err(|_| format!("rdev: {s:?}"))?,
                    b.parse().map_err(|_| format!("rdev: {s:?}"))?,
                ));
            }
            b"sha256" => {
                let raw = hex::decode(v).map_err(|_| format!("sha256: {:?}", vs()))?;
                e.sha256 = Some(
                    raw.try_into()
                        .map_err(|_| format!("sha256: {:?} is not 32 bytes", vs()))?,
                );
            }
            b"link" => e.link = Some(unescape(v).map_err(|e| e.to_string())?),
            _ if k.starts_with(b"xattr.") => {
                e.xattrs.insert(
                    unescape(&k[6..]).map_err(|e| e.to_string())?,
                    unescape(v).map_err(|e| e.to_string())?,
                );
            }
            _ => return Err(format!("unknown field {:?}", String::from_utf8_lossy(k))),
        }
    }
    if !have_type {
        return Err("missing type=".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::default();
        let mut d = Entry::new(RelPath::new(b"etc".to_vec()), Kind::Dir);
        d.mode = 0o755;
        m.insert(d);
        let mut f = Entry::new(
            RelPath::new(b"etc/we ird=\\#\n\xff name".to_vec()),
            Kind::File,
        );
        f.mode = 0o4755;
        f.uid = 1000;
        f.gid = 100;
        f.size = 3;
        f.mtime = Mtime {
            sec: 1_700_000_000,
            nsec: Some(5),
        };
        f.sha256 = Some([7u8; 32]);
        f.xattrs
            .insert(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, b' ']);
        f.xattrs
            .insert(b"user.a=b".to_vec(), b"text value".to_vec());
        m.insert(f);
        let mut l = Entry::new(RelPath::new(b"lib".to_vec()), Kind::Symlink);
        l.link = Some(b"usr/lib".to_vec());
        l.mode = 0o777;
        m.insert(l);
        let mut c = Entry::new(RelPath::new(b"dev/null".to_vec()), Kind::Char);
        c.rdev = Some((1, 3));
        c.mode = 0o666;
        m.insert(c);
        m
    }

    #[test]
    fn round_trips_any_bytes() {
        let m = sample();
        let text = m.to_text();
        let back = Manifest::parse(&text[..], "t").unwrap();
        assert_eq!(back, m);
        // One line per entry: escaped newlines never split a record.
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), m.len() + 1);
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!("{HEADER}\n/a type=file mode=0644\n/b type=file mode=99x\n");
        let err = Manifest::parse(text.as_bytes(), "m.txt")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.txt:3: mode"), "{err}");
        let err = Manifest::parse(&b"/a type=file\n"[..], "m.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a shipyard manifest"), "{err}");
        let err = Manifest::parse(&b"#shipyard-manifest v9\n"[..], "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
