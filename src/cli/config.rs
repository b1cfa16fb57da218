use anyhow::{bail, Context, Result};
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::mutate::{self, ConfigEdit, MapEdit};

/// Edit an image's configuration (like `umoci config`, `buildah config`).
///
/// Writes a new config and a new manifest naming the same layers, tags it
/// (--tag, else the image's own tag moves to it) and prints its digest.
/// The old manifest and config stay in the layout as they were. The edit
/// is recorded in the config's history. Settings given empty ("") are
/// cleared.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR:TAG or oci:DIR@sha256:….
    pub image: String,
    /// Tag the edited image with this (in the same layout) instead of
    /// moving the image's tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// The entrypoint: a JSON array (exec form) or a string, run with
    /// /bin/sh -c (shell form); "" clears it.
    #[arg(long, value_name = "JSON|STRING")]
    pub entrypoint: Option<String>,
    /// The command (arguments to the entrypoint): as --entrypoint.
    #[arg(long, value_name = "JSON|STRING")]
    pub cmd: Option<String>,
    /// Set an environment variable. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Remove an environment variable. Repeatable.
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// Set a label. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Remove a label. Repeatable.
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
    /// Set a manifest annotation. Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Remove a manifest annotation. Repeatable.
    #[arg(long = "remove-annotation", value_name = "KEY")]
    pub remove_annotations: Vec<String>,
    /// The user (NAME, UID or UID:GID); "" clears it.
    #[arg(long)]
    pub user: Option<String>,
    /// The working directory; "" clears it.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Expose a port (N or N/udp). Repeatable.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<String>,
    /// Stop exposing a port. Repeatable.
    #[arg(long = "remove-port", value_name = "PORT")]
    pub remove_ports: Vec<String>,
    /// Declare a volume. Repeatable.
    #[arg(long = "volume", value_name = "PATH")]
    pub volumes: Vec<String>,
    /// Remove a volume. Repeatable.
    #[arg(long = "remove-volume", value_name = "PATH")]
    pub remove_volumes: Vec<String>,
    /// The stop signal (SIGTERM, 15…); "" clears it.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// The author; "" clears it.
    #[arg(long)]
    pub author: Option<String>,
    /// The creation time: RFC 3339, or @SECONDS since the epoch.
    #[arg(long, value_name = "TIME")]
    pub created: Option<String>,
    /// The platform the image says it is for: OS/ARCH[/VARIANT] (the
    /// layers are not changed: for images whose files fit any, or that
    /// were built on such a machine).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// A command-like setting: a JSON array as is, a string in shell form.
fn command_form(flag: &str, s: &str) -> Result<Vec<String>> {
    let t = s.trim_start();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    if t.starts_with('[') {
        return serde_json::from_str(t)
            .with_context(|| format!("{flag} {s}: not a JSON array of strings"));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

fn pairs(flag: &str, list: &[String]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{flag} {kv}: expected KEY=VALUE"))
        })
        .collect()
}

fn created(s: &str) -> Result<String> {
    if let Some(secs) = s.strip_prefix('@') {
        let secs: i64 = secs
            .parse()
            .with_context(|| format!("--created {s}: expected @SECONDS"))?;
        return Ok(shipyard_image::oci::image::rfc3339(secs));
    }
    let ok = s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && (s.ends_with('Z') || s[19..].contains(['+', '-']));
    if !ok {
        bail!("--created {s}: expected RFC 3339 (2024-01-02T03:04:05Z) or @SECONDS");
    }
    Ok(s.to_string())
}

pub fn run(a: Args) -> Result<()> {
    let (dir, tag) = super::oci_ref(&a.image)?;
    let new_tag = match (&a.tag, &tag) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) if !t.starts_with("sha256:") => t.clone(),
        _ => bail!("{}: name the tag to write with --tag", a.image),
    };
    shipyard_image::oci::layout::validate_tag(&new_tag)?;
    let edit = ConfigEdit {
        entrypoint: a
            .entrypoint
            .as_deref()
            .map(|s| command_form("--entrypoint", s))
            .transpose()?,
        cmd: a
            .cmd
            .as_deref()
            .map(|s| command_form("--cmd", s))
            .transpose()?,
        env: MapEdit {
            set: pairs("--env", &a.env)?,
            remove: a.unset_env.clone(),
        },
        labels: MapEdit {
            set: pairs("--label", &a.labels)?,
            remove: a.remove_labels.clone(),
        },
        annotations: MapEdit {
            set: pairs("--annotation", &a.annotations)?,
            remove: a.remove_annotations.clone(),
        },
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        ports: MapEdit {
            set: a.ports.iter().map(|p| (p.clone(), String::new())).collect(),
            remove: a.remove_ports.clone(),
        },
        volumes: MapEdit {
            set: a
                .volumes
                .iter()
                .map(|v| (v.clone(), String::new()))
                .collect(),
            remove: a.remove_volumes.clone(),
        },
        stop_signal: a.stop_signal.clone(),
        author: a.author.clone(),
        created: a.created.as_deref().map(created).transpose()?,
        platform: a
            .platform
            .as_deref()
            .map(|p| {
                shipyard_image::oci::image::Platform::parse(p)
                    .map_err(|e| anyhow::anyhow!("--platform {e}"))
            })
            .transpose()?,
        created_by: format!(
            "shipyard config {}",
            std::env::args().skip(2).collect::<Vec<_>>().join(" ")
        ),
    };
    let layout = Layout::open(&dir)?;
    let desc = layout.resolve(tag.as_deref())?;
    let img = shipyard_image::oci::image::Image::load(&layout, &desc)
        .with_context(|| format!("reading {}", a.image))?;
    let config = mutate::edit_config(&img.config, &edit);
    let mut config_desc = layout.put_json(&config, img.manifest.config().media_type().clone())?;
    config_desc.set_annotations(img.manifest.config().annotations().clone());
    let mut manifest = img.manifest.clone();
    manifest.set_config(config_desc);
    manifest.set_annotations(mutate::annotations(
        img.manifest.annotations().as_ref(),
        &edit,
    ));
    let media = desc.media_type().clone();
    let new = layout.put_json(&manifest, media)?;
    layout.tag(&new_tag, &new)?;
    println!("{}", new.digest());
    Ok(())
}
