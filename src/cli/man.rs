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

/// Every man page: `shipyard.1` and `shipyard-SUB.1` for each visible
/// subcommand.
pub fn render() -> Result<Vec<(String, Vec<u8>)>> {
    let cmd = super::command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    out.push(("shipyard.1".to_string(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("shipyard-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(clap::builder::Str::from(leak(name.clone())));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        out.push((format!("{name}.1"), buf));
    }
    Ok(out)
}

/// clap names are `&'static str`; man generation runs once per process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
