//! The terminal of an interactive step (`shipyard shell`).
//!
//! A step never gets the caller's terminal: with it, it could type into the
//! caller's shell (TIOCSTI), change its settings, or read what the user
//! types after shipyard exits. An interactive step gets a pseudo-terminal
//! of its own instead, as `docker run -it` does: its slave end becomes the
//! controlling terminal of the step's session, and shipyard copies bytes
//! between the user's terminal (put in raw mode meanwhile, so that Ctrl-C
//! and Ctrl-Z reach the step's terminal as keystrokes) and the master end,
//! and forwards window size changes.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set by the SIGWINCH handler; the input thread applies the new size.
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigwinch(_: libc::c_int) {
    RESIZED.store(true, Ordering::Relaxed);
}

/// A pseudo-terminal made for one step.
pub(super) struct Pty {
    master: OwnedFd,
    slave: Option<OwnedFd>,
}

fn last_error(what: &str) -> std::io::Error {
    let err = std::io::Error::last_os_error();
    std::io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// The settings and size of the terminal on `fd`, if it is one.
fn term_state(fd: i32) -> Option<(libc::termios, libc::winsize)> {
    // SAFETY: plain ioctls filling structs we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return None;
        }
        let mut w: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) != 0 {
            w = std::mem::zeroed();
        }
        Some((t, w))
    }
}

impl Pty {
    /// A new pseudo-terminal with the settings and size of the user's
    /// (stdin's). When stdout is not a terminal, output is not translated
    /// (no CR before LF), so that a redirected output holds what the step
    /// wrote.
    pub(super) fn open() -> std::io::Result<Pty> {
        let (mut term, size) = term_state(0).ok_or_else(|| last_error("reading the terminal"))?;
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            term.c_oflag &= !libc::OPOST;
        }
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds on success; the termios and
        // winsize it reads are ours.
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), &term, &size) };
        if r != 0 {
            return Err(last_error("allocating a pseudo-terminal"));
        }
        // SAFETY: openpty succeeded, so both are open fds that nothing
        // else owns.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        for fd in [&master, &slave] {
            // SAFETY: fcntl on an fd we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(Pty {
            master,
            slave: Some(slave),
        })
    }

    /// The slave end, for one of the helper's standard streams.
    pub(super) fn slave(&self) -> std::io::Result<std::process::Stdio> {
        match &self.slave {
            Some(s) => Ok(s.try_clone()?.into()),
            None => Err(std::io::Error::other(
                "the pseudo-terminal is already in use",
            )),
        }
    }

    /// Closes our copy of the slave end (the step holds its own) and starts
    /// copying: from here the user's terminal is in raw mode until
    /// [`Proxy::finish`] (or the proxy is dropped).
    pub(super) fn start(mut self) -> std::io::Result<Proxy> {
        self.slave = None;
        let saved = term_state(0).map(|(t, _)| t);
        if let Some(t) = saved {
            let mut raw = t;
            // SAFETY: cfmakeraw edits our copy; tcsetattr applies it to
            // stdin, a terminal (term_state succeeded).
            unsafe {
                libc::cfmakeraw(&mut raw);
                libc::tcsetattr(0, libc::TCSANOW, &raw);
            }
        }
        let mut guard = Proxy {
            saved,
            stop: Arc::new(AtomicBool::new(false)),
            output: None,
            input: None,
            old_winch: None,
        };
        // SAFETY: the handler only stores to an atomic.
        guard.old_winch = unsafe {
            nix::sys::signal::sigaction(
                nix::sys::signal::Signal::SIGWINCH,
                &nix::sys::signal::SigAction::new(
                    nix::sys::signal::SigHandler::Handler(on_sigwinch),
                    nix::sys::signal::SaFlags::SA_RESTART,
                    nix::sys::signal::SigSet::empty(),
                ),
            )
        }
        .ok();
        let master = Arc::new(std::fs::File::from(self.master));
        let out_master = Arc::clone(&master);
        guard.output = Some(std::thread::spawn(move || {
            // Ends when every process holding the slave is gone (EIO).
            let mut buf = [0u8; 8192];
            let mut out = std::io::stdout();
            loop {
                match (&*out_master).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }));
        let stop = Arc::clone(&guard.stop);
        guard.input = Some(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if RESIZED.swap(false, Ordering::Relaxed) {
                    if let Some((_, size)) = term_state(0) {
                        // SAFETY: sets the size of the pty we own.
                        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                    }
                }
                let mut p = libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd. A short timeout, so that the
                // stop flag and resizes are seen without a keystroke.
                let n = unsafe { libc::poll(&mut p, 1, 100) };
                if n <= 0 || stop.load(Ordering::Relaxed) {
                    continue;
                }
                // SAFETY: reads into our buffer from stdin, which poll
                // says is readable (or closed).
                let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if got <= 0 {
                    break;
                }
                if (&*master).write_all(&buf[..got as usize]).is_err() {
                    break;
                }
            }
        }));
        Ok(guard)
    }
}

/// The running copy between the user's terminal and the step's.
pub(super) struct Proxy {
    saved: Option<libc::termios>,
    stop: Arc<AtomicBool>,
    output: Option<std::thread::JoinHandle<()>>,
    input: Option<std::thread::JoinHandle<()>>,
    old_winch: Option<nix::sys::signal::SigAction>,
}

impl Proxy {
    /// Once the step is gone: copies what it still wrote, stops reading the
    /// user's terminal and gives it back its settings.
    pub(super) fn finish(mut self) {
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.input.take() {
            let _ = h.join();
        }
        self.restore();
    }

    fn restore(&mut self) {
        if let Some(t) = self.saved.take() {
            // SAFETY: gives stdin back the settings read from it.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
        if let Some(old) = self.old_winch.take() {
            // SAFETY: reinstates the disposition sigaction returned.
            let _ =
                unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &old) };
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.restore();
    }
}
