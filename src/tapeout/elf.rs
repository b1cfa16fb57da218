//! The ELF closure: the shared libraries an executable needs, resolved the
//! way the dynamic loader would inside the builder.

use super::view::{normalize, BuilderView};
use std::path::{Path, PathBuf};

/// What an ELF file asks the loader for.
pub struct ElfNeeds {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub search: Vec<String>,
}

/// Reads the dynamic section of `host_path`; `None` if it is not ELF.
pub fn needs(host_path: &Path) -> Option<ElfNeeds> {
    let bytes = std::fs::read(host_path).ok()?;
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
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
    read_ld_conf(view, Path::new("/etc/ld.so.conf"), &mut out, 0);
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
    out.dedup();
    out
}

fn read_ld_conf(view: &BuilderView, conf: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 4 {
        return;
    }
    let Some(loc) = view.locate(conf) else { return };
    let Ok(text) = std::fs::read_to_string(&loc.host) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pat) = line.strip_prefix("include ") {
            // Only `DIR/*.conf` style includes are used in practice.
            let pat = pat.trim();
            if let Some((dir, _)) = pat.rsplit_once('/') {
                if let Some(d) = view.locate(Path::new(dir)) {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(&d.host)
                        .map(|rd| {
                            rd.filter_map(|e| e.ok())
                                .map(|e| e.path())
                                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                                .collect()
                        })
                        .unwrap_or_default();
                    files.sort();
                    for f in files {
                        if let Some(name) = f.file_name() {
                            read_ld_conf(view, &Path::new(dir).join(name), out, depth + 1);
                        }
                    }
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Resolves a library name to a builder path.
pub fn find_library(
    view: &BuilderView,
    name: &str,
    origin: &Path,
    search: &[String],
    dirs: &[PathBuf],
) -> Option<PathBuf> {
    if name.contains('/') {
        let p = normalize(&origin.join(name));
        return view.locate(&p).map(|_| p);
    }
    let expanded = search.iter().map(|s| {
        PathBuf::from(
            s.replace("$ORIGIN", &origin.display().to_string())
                .replace("${ORIGIN}", &origin.display().to_string()),
        )
    });
    for d in expanded.chain(dirs.iter().cloned()) {
        let p = normalize(&d.join(name));
        if view.locate(&p).is_some() {
            return Some(p);
        }
    }
    None
}
