use anyhow::Result;

/// Print a shell completion script.
///
/// bash: `shipyard completion bash > ~/.local/share/bash-completion/completions/shipyard`;
/// zsh: `shipyard completion zsh > "${fpath[1]}/_shipyard"`;
/// fish: `shipyard completion fish > ~/.config/fish/completions/shipyard.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args) -> Result<()> {
    let mut cmd = visible();
    // Into memory first: generate() panics on a write error, and a closed
    // stdout must end quietly (see main).
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "shipyard", &mut buf);
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, &buf)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// The command line without its hidden, internal subcommands (the sandbox
/// helper, man page generation), which a user should not be offered.
fn visible() -> clap::Command {
    let full = super::command();
    let mut cmd = clap::Command::new("shipyard").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    for a in full.get_arguments() {
        cmd = cmd.arg(a.clone());
    }
    for s in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(s.clone());
    }
    cmd
}
