//! A tapeout run by the sandbox helper as root of the build's user
//! namespace, where the files a step gave to other ids are readable (see
//! `sandbox::job::InNamespace`).

use super::view::BuilderView;
use crate::project::TapeoutRule;
use crate::sandbox::job::InNamespace;
use serde::{Deserialize, Serialize};
use shipyard_image::rootfs::manifest::Manifest;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A tapeout to run in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapeoutJob {
    /// The rule to run.
    pub rule: TapeoutRule,
    /// The builder's changes (the overlay's upper dir, or the copy).
    pub changes: PathBuf,
    /// The builder's read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// For the host builder: the host directories bound into it.
    pub host_dirs: Vec<PathBuf>,
    /// Whether `changes` is a full copy of the builder (no overlay).
    pub copy_mode: bool,
    /// Where the files taken are staged.
    pub stage: PathBuf,
    /// Whether this is the spec's last step (closures may take anything).
    pub final_step: bool,
    /// Where the explanation is written (JSON: image path → reason).
    pub explain_out: PathBuf,
    /// At isolation none: a manifest of what the rules changed in `/`
    /// (the builder is `/` itself; see `build::inplace`).
    #[serde(default)]
    pub in_place: Option<PathBuf>,
}

impl TapeoutJob {
    fn view(&self) -> Result<BuilderView, String> {
        if let Some(changed) = &self.in_place {
            // Isolation none: no namespace, `/` is the builder.
            let f =
                std::fs::File::open(changed).map_err(|x| format!("{}: {x}", changed.display()))?;
            let m = Manifest::parse(std::io::BufReader::new(f), &changed.display().to_string())
                .map_err(|x| shipyard_image::error::chain_text(&x))?;
            return Ok(BuilderView::in_place(&m));
        }
        let mut view = BuilderView::new(
            self.changes.clone(),
            self.lowers.clone(),
            self.host_dirs.clone(),
            None,
        );
        view.set_inside_namespace();
        if self.copy_mode {
            view.use_copy()
                .map_err(|x| shipyard_image::error::chain_text(&x))?;
        }
        Ok(view)
    }
}

impl InNamespace for TapeoutJob {
    const KIND: &'static str = "tapeout";

    fn run(&self) -> Result<(), String> {
        let view = self.view()?;
        let explain = super::run(&self.rule, &view, &self.stage, self.final_step)
            .map_err(|x| shipyard_image::error::chain_text(&x))?;
        let json: BTreeMap<String, String> = explain
            .into_iter()
            .map(|(p, why)| (p.display().to_string(), why))
            .collect();
        let bytes = serde_json::to_vec(&json).map_err(|x| x.to_string())?;
        std::fs::write(&self.explain_out, bytes)
            .map_err(|x| format!("{}: {x}", self.explain_out.display()))
    }
}
