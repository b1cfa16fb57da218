//! shipyard runs that do not succeed: an error the test reads (`fails`),
//! or a reader that goes away (`shipyard … | head -1`).

use super::cli::shipyard;
use std::ffi::OsStr;

/// Runs shipyard and asserts failure; returns stderr.
pub fn fails<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = shipyard().args(args).output().expect("run shipyard");
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs shipyard with its stdout read by something that stops after the
/// first line (`shipyard … | head -1`); returns that line, the exit status
/// and stderr. The output must be larger than a pipe's buffer, so that
/// shipyard is still writing when the reader goes away.
pub fn head_one<I, S>(args: I) -> (String, std::process::ExitStatus, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::{BufRead, Read};
    let mut c = shipyard()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shipyard");
    let mut first = String::new();
    {
        let mut r = std::io::BufReader::new(c.stdout.take().unwrap());
        r.read_line(&mut first).unwrap();
    }
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (first, c.wait().unwrap(), err)
}

/// The exit of `cat` when its reader goes away: SIGPIPE, silently.
pub fn assert_quiet_broken_pipe(status: std::process::ExitStatus, stderr: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(13), "killed by SIGPIPE: {status:?}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}
