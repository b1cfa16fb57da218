//! Plain HTTP(S) downloads, for a Containerfile's `ADD URL`: one GET
//! (redirects followed), the body streamed to a file through a size bound
//! and a sha256, the server's `Last-Modified` kept for the file's mtime.
//! Proxies come from the usual variables, as for registries.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request could not be made or answered (DNS, TLS, a timeout).
    #[error("GET {url}")]
    Request {
        /// What was asked for.
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered, but not with the file.
    #[error("GET {url}: the server answered {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body is bigger than the caller allows.
    #[error("GET {url}: larger than {limit} bytes, the most a download may be")]
    TooLarge {
        /// What was asked for.
        url: String,
        /// The bound, in bytes.
        limit: u64,
    },
    /// The body could not be read or written to its file.
    #[error("GET {url}: writing {}", path.display())]
    Write {
        /// What was asked for.
        url: String,
        /// Where it was going.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body's sha256, in hex.
    pub sha256: String,
    /// The body's length in bytes.
    pub size: u64,
    /// `Last-Modified`, in seconds since the epoch, when the server said
    /// it in the HTTP date format.
    pub last_modified: Option<i64>,
}

/// Downloads `url` into the file `to` (written beside it and renamed, so
/// a concurrent reader never sees half of it); more than `limit` bytes is
/// an error and leaves nothing.
pub fn fetch(url: &str, to: &Path, limit: u64, timeout: Duration) -> Result<Fetched, FetchError> {
    // ring, as the registry client installs it (see there).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let req = |source| FetchError::Request {
        url: url.to_string(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("shipyard/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(req)?;
    let mut r = client.get(url).send().map_err(req)?;
    if !r.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: r.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        limit,
    };
    if r.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let last_modified = (r.headers().get(reqwest::header::LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .and_then(http_date);
    let dir = to.parent().unwrap_or(Path::new("."));
    let write = |source| FetchError::Write {
        url: url.to_string(),
        path: to.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(write(e)),
        };
        size += n as u64;
        if size > limit {
            return Err(too_large());
        }
        hash.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(write)?;
    }
    tmp.flush().map_err(write)?;
    tmp.persist(to).map_err(|e| write(e.error))?;
    Ok(Fetched {
        sha256: hex::encode(hash.finalize()),
        size,
        last_modified,
    })
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the one format servers
/// must send) in seconds since the epoch.
pub fn http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, s] = hms[..] else { return None };
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one answer per connection on 127.0.0.1: `head` (status line
    /// and headers) then `body`; returns the URL.
    fn serve(head: &'static str, body: Vec<u8>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/file.txt", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                let _ = s.write_all(&body);
            }
        });
        url
    }

    #[test]
    fn http_dates_are_read_as_servers_send_them() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951825600));
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_download_is_hashed_dated_and_bounded() {
        let url = serve(
            "HTTP/1.1 200 OK\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            b"hello\n".to_vec(),
        );
        let t = tempfile::tempdir().unwrap();
        let to = t.path().join("d/file.txt");
        let f = fetch(&url, &to, 1 << 20, Duration::from_secs(10)).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"hello\n");
        assert_eq!(f.size, 6);
        assert_eq!(f.last_modified, Some(784111777));
        assert_eq!(
            f.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        // Past the bound: an error, and nothing written.
        let to = t.path().join("big");
        let e = fetch(&url, &to, 5, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, FetchError::TooLarge { limit: 5, .. }), "{e}");
        assert!(!to.exists());
        let url = serve("HTTP/1.1 404 Not Found\r\n", Vec::new());
        let e = fetch(&url, &to, 5, Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().ends_with("the server answered 404"), "{e}");
    }
}
