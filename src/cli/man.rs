use anyhow::{Context, Result};
use std::path::PathBuf;

/// Write man pages generated from the CLI definition into DIR.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub dir: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.dir)?;
    for (name, bytes) in render()? {
        std::fs::write(a.dir.join(&name), bytes).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

/// Every man page: `shipyard.1`, `shipyard-SUB.1` for each visible
/// subcommand and `shipyard-SUB-NESTED.1` for theirs.
pub fn render() -> Result<Vec<(String, Vec<u8>)>> {
    let cmd = super::command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    out.push(("shipyard.1".to_string(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, &format!("shipyard-{}", sub.get_name()), &mut out)?;
        // Nested commands (`shipyard pod unpack`) get pages of their own.
        for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("shipyard-{}-{}", sub.get_name(), nested.get_name());
            page(nested, &name, &mut out)?;
        }
    }
    Ok(out)
}

fn page(cmd: &clap::Command, name: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let cmd = cmd
        .clone()
        .name(clap::builder::Str::from(leak(name.to_string())));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    out.push((format!("{name}.1"), buf));
    Ok(())
}

/// clap names are `&'static str`; man generation runs once per process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
