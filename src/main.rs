//! The `shipyard` binary: parse the command line, run, map errors to exit
//! codes. Everything else lives in the library.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use clap::Parser;
use shipyard::cli::{run, Cli};

fn main() {
    let cli = Cli::parse();
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    quiet_on_closed_stdout();
    if let Err(e) = run(cli) {
        if is_broken_pipe(&e) {
            die_of_sigpipe();
        }
        eprintln!("error: {}", shipyard::cli::error_text(&e));
        std::process::exit(1);
    }
}

/// The reader of our output went away (`shipyard manifest … | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Ends the way `cat` or `ls` end when their reader goes away: killed by
/// SIGPIPE, which shells report silently (status 141). Rust ignores
/// SIGPIPE so that writes fail with EPIPE instead; shipyard keeps that
/// everywhere else (a sandboxed child's pipe closing must be an error,
/// not a silent death) and only takes the default action here, at exit.
#[allow(unsafe_code)] // libc signal() and raise(), to end as SIGPIPE ends a process
fn die_of_sigpipe() -> ! {
    // SAFETY: signal() and raise() with a valid signal number; nothing
    // else runs concurrently that relies on the SIGPIPE disposition, since
    // the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

/// `println!` panics when stdout is a closed pipe ("failed printing to
/// stdout"): that is the same broken pipe, not a bug to report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            die_of_sigpipe();
        }
        default(info);
    }));
}
