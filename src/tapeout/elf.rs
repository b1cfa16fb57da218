//! The ELF closure: the shared libraries an executable needs, resolved the
//! way the dynamic loader would inside the builder.

pub use super::view::Resolved;
use super::view::{BuilderView, Located};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What an ELF file asks the loader for.
pub struct ElfNeeds {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub search: Vec<String>,
}

/// ELF files larger than this are not parsed (their libraries are not
/// followed, with a warning): parsing needs the whole file in memory.
pub const MAX_ELF: u64 = 256 << 20;

/// `ld.so.conf` and its includes are read up to this size.
pub const MAX_LD_CONF: u64 = 1 << 20;

/// Include files of `ld.so.conf` read at most (a loop of includes, or a
/// directory of thousands, stops here).
const MAX_LD_CONF_FILES: usize = 256;

/// Reads the dynamic section of a located builder file; `None` if it is
/// not ELF (or cannot be read, or is too large to parse).
pub fn needs(view: &BuilderView, loc: &Located) -> Option<ElfNeeds> {
    let mut f = view.open_file(loc).ok()?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).ok()?;
    if &magic != b"\x7fELF" {
        return None;
    }
    let mut bytes = magic.to_vec();
    (&mut f).take(MAX_ELF).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_ELF {
        tracing::warn!(
            "{}: an ELF file larger than {} MiB; its libraries are not followed",
            loc.host.display(),
            MAX_ELF >> 20
        );
        return None;
    }
    needs_of(&bytes)
}

/// What the ELF image `bytes` asks for; `None` if it is not ELF.
pub fn needs_of(bytes: &[u8]) -> Option<ElfNeeds> {
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = goblin::elf::Elf::parse(bytes).ok()?;
    let mut search: Vec<String> = Vec::new();
    // DT_RUNPATH wins over DT_RPATH when both are present.
    let paths = if elf.runpaths.is_empty() {
        &elf.rpaths
    } else {
        &elf.runpaths
    };
    for p in paths {
        search.extend(p.split(':').map(str::to_string));
    }
    Some(ElfNeeds {
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search,
    })
}

/// The loader's search list inside the builder: /etc/ld.so.conf (with its
/// includes), then the default directories.
pub fn loader_dirs(view: &BuilderView) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut budget = MAX_LD_CONF_FILES;
    read_ld_conf(view, Path::new("/etc/ld.so.conf"), &mut out, 0, &mut budget);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        out.push(PathBuf::from(d));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

/// Reads one loader config file of the builder (resolved inside it, read
/// with a size bound) and its `include` lines (glob patterns on file
/// names, as ldconfig takes them).
fn read_ld_conf(
    view: &BuilderView,
    conf: &Path,
    out: &mut Vec<PathBuf>,
    depth: usize,
    budget: &mut usize,
) {
    if depth > 4 || *budget == 0 {
        return;
    }
    *budget -= 1;
    let Some(r) = view.resolve(conf, true) else {
        return;
    };
    let Some(loc) = view.locate(&r.path) else {
        return;
    };
    let text = match view
        .open_file(&loc)
        .and_then(|f| shipyard_image::inroot::read_bounded(f.into(), MAX_LD_CONF, conf))
    {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            tracing::warn!("{}: {e}; its directories are not searched", conf.display());
            return;
        }
    };
    let base = conf.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pat) = line.strip_prefix("include") {
            let pat = pat.trim();
            if pat.is_empty() {
                continue;
            }
            // Relative includes are relative to the including file.
            let full = base.join(pat);
            let (dir, name) = match (full.parent(), full.file_name()) {
                (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
                _ => continue,
            };
            let Ok(glob) = globset::Glob::new(&name) else {
                continue;
            };
            let m = glob.compile_matcher();
            let Some(rd) = view.resolve(&dir, true) else {
                continue;
            };
            for f in view.read_dir(&rd.path) {
                if m.is_match(&f) {
                    read_ld_conf(view, &rd.path.join(f), out, depth + 1, budget);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Resolves a library name to a builder path (inside the builder, its
/// symlinks followed in the directories; the last component is the name
/// the loader opens, which may itself be a symlink).
pub fn find_library(
    view: &BuilderView,
    name: &str,
    origin: &Path,
    search: &[String],
    dirs: &[PathBuf],
) -> Option<Resolved> {
    if name.contains('/') {
        return view.resolve(&Path::new("/").join(origin).join(name), false);
    }
    let expanded = search.iter().map(|s| {
        let o = origin.display().to_string();
        Path::new("/").join(s.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
    });
    for d in expanded.chain(dirs.iter().cloned()) {
        if let Some(r) = view.resolve(&d.join(name), false) {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(root: &Path) -> BuilderView {
        BuilderView::new(root.to_path_buf(), Vec::new(), Vec::new(), None)
    }

    fn write(root: &Path, p: &str, bytes: &[u8]) {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// A step can make `ld.so.conf` (or a file it includes) as large as
    /// the disk allows: past the bound it is skipped, not read.
    #[test]
    fn loader_configs_above_the_bound_are_not_read() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mut big = b"/opt/big\ninclude /etc/ld.so.conf.d/*.conf\n".to_vec();
        big.resize(MAX_LD_CONF as usize + 1, b'#');
        write(root, "etc/ld.so.conf", &big);
        write(root, "etc/ld.so.conf.d/a.conf", b"/opt/included\n");
        let dirs = loader_dirs(&view_of(root));
        assert!(!dirs.contains(&PathBuf::from("/opt/big")), "{dirs:?}");
        assert!(!dirs.contains(&PathBuf::from("/opt/included")), "{dirs:?}");
        assert!(dirs.contains(&PathBuf::from("/usr/lib")), "{dirs:?}");
        // An included file past the bound is skipped; the others are read.
        write(
            root,
            "etc/ld.so.conf",
            b"/opt/top\ninclude /etc/ld.so.conf.d/*.conf\n",
        );
        let mut big = b"/opt/big-include\n".to_vec();
        big.resize(MAX_LD_CONF as usize + 1, b'#');
        write(root, "etc/ld.so.conf.d/b.conf", &big);
        let dirs = loader_dirs(&view_of(root));
        for (want, there) in [
            ("/opt/top", true),
            ("/opt/included", true),
            ("/opt/big-include", false),
        ] {
            assert_eq!(
                dirs.contains(&PathBuf::from(want)),
                there,
                "{want}: {dirs:?}"
            );
        }
    }

    /// An ELF file past the bound is not parsed (it would be held in
    /// memory whole); below it, the same bytes are.
    #[test]
    fn elf_files_above_the_bound_are_not_parsed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let exe = std::fs::read("/bin/true").unwrap();
        write(root, "bin/small", &exe);
        write(root, "bin/big", &exe);
        // Sparse: no disk is spent on the zeros.
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("bin/big"))
            .unwrap()
            .set_len(MAX_ELF + 1)
            .unwrap();
        let view = view_of(root);
        let loc = |p: &str| view.locate(Path::new(p)).unwrap();
        let small = needs(&view, &loc("/bin/small")).expect("/bin/true is ELF");
        assert!(
            small.needed.iter().any(|l| l.starts_with("libc.so")),
            "{:?}",
            small.needed
        );
        assert!(needs(&view, &loc("/bin/big")).is_none());
    }
}
