use super::transfer::RegistryArgs;
use crate::pod::{read, CONFIG_VOLUME};
use anyhow::{bail, Context, Result};
use shipyard_image::reference::Reference;
use shipyard_image::rootfs::entry::Kind;
use shipyard_image::transport::{self, Report};
use std::path::PathBuf;

/// Work with pods: images, configuration files and data volumes bundled
/// as one OCI image index (see docs/pod-format.md).
///
/// `shipyard build` writes pods declared with [pod.NAME] in shipyard.toml,
/// tagged NAME:VERSION and NAME; `push` and `pull` move them whole.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PodCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PodCommand {
    Unpack(UnpackArgs),
    Kube(KubeArgs),
}

/// Unpack a pod into a deployable directory.
///
/// DEST gets pod.json (the definition: containers, image digests,
/// commands, env, ports, mounts), images/ (one OCI layout, each member
/// image tagged with its container name) and volumes/NAME/ for each volume
/// (volumes/config/ holds the configuration files). Volumes are extracted
/// safely: nothing is written outside DEST.
#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// The pod: oci:DIR:NAME (or docker://, oci-archive:).
    pub pod: String,
    /// A new (or empty) directory.
    pub dest: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Print a Kubernetes manifest for a pod.
///
/// A Pod with every image pinned by digest, a ConfigMap with the
/// configuration files, and the data volumes as one `image` volume (the
/// pod's artifact) mounted with subPath: Kubernetes 1.33+ (ImageVolume)
/// and a runtime that mounts OCI artifacts. Images are named in the
/// --registry repository the pod was pushed to; without it, only images
/// the pod took from a registry can be named.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// The pod: oci:DIR:NAME (or docker://, oci-archive:).
    pub pod: String,
    /// docker://HOST/REPO the pod was pushed to.
    #[arg(long, value_name = "docker://HOST/REPO")]
    pub registry: Option<String>,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

fn open(s: &str, r: &RegistryArgs) -> Result<(shipyard_image::oci::layout::Layout, read::Pod)> {
    let reference = Reference::parse_or_registry(s)?;
    let o = r.read_options(&reference)?;
    let (layout, d) = transport::source(&reference, &o, &o.progress, &mut Report::default())?;
    if !read::is_pod(&layout, &d) {
        bail!("{s} is not a pod (an image? use `shipyard unpack`)");
    }
    let pod = read::load(&layout, &d).with_context(|| format!("reading pod {s}"))?;
    Ok((layout, pod))
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    match a.command {
        PodCommand::Unpack(u) => {
            let (layout, pod) = open(&u.pod, &u.registry)?;
            crate::pod::unpack::unpack(&layout, &pod, &u.dest)?;
            if !quiet {
                eprintln!(
                    "pod {}:{} ({} containers, {} volumes) -> {}",
                    pod.definition.name,
                    pod.definition.version,
                    pod.definition.containers.len(),
                    pod.definition.volumes.len(),
                    u.dest.display()
                );
            }
            println!("{}", pod.digest);
            Ok(())
        }
        PodCommand::Kube(k) => {
            let (layout, pod) = open(&k.pod, &k.registry_args)?;
            let registry = match k.registry.as_deref().map(Reference::parse_or_registry) {
                None => None,
                Some(Ok(Reference::Registry(r))) => Some(r),
                Some(Ok(other)) => {
                    bail!("--registry {other}: name a registry repository, docker://HOST/REPO")
                }
                Some(Err(e)) => return Err(e.into()),
            };
            // The config files, read from the config volume's layer.
            let mut files = Vec::new();
            if let (Some(l), Some(v)) = (
                pod.layers.get(CONFIG_VOLUME),
                pod.definition
                    .volumes
                    .iter()
                    .find(|v| v.name == CONFIG_VOLUME),
            ) {
                shipyard_image::layer::for_each_member(&layout, l, &v.diff_id, |item, data| {
                    if let shipyard_image::layer::read::TarItem::Entry(e) = item {
                        let p = e.path.as_bytes();
                        if e.kind == Kind::File && p.starts_with(b"config/") {
                            let mut buf = Vec::new();
                            data.read_to_end(&mut buf)
                                .map_err(shipyard_image::layer::LayerError::Io)?;
                            files.push((String::from_utf8_lossy(&p[7..]).into_owned(), buf));
                        }
                    }
                    Ok(())
                })?;
            }
            print!(
                "{}",
                crate::pod::kube::render(&pod, &files, registry.as_ref())?
            );
            Ok(())
        }
    }
}
