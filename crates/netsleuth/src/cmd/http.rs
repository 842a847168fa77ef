//! The smallest HTTP/1.1 server that Prometheus can scrape: `GET /metrics` answers the registry's
//! text, any other path 404, any other method 405; every connection is closed after one answer.
//! std::net and threads only (no async runtime in the default build).
//!
//! A scraper must not be able to stall watch or the other scrapers: the accept loop runs on its own
//! thread and hands each connection to a short-lived thread (at most `MAX_CONNECTIONS` at once; more
//! get a 503 at once), a request head is read for at most `READ_DEADLINE` and `MAX_REQUEST` bytes, and
//! an answer is written within `WRITE_TIMEOUT`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request head read (request line and headers); a scrape's is ~200 bytes.
pub const MAX_REQUEST: usize = 8 << 10;
/// How long a client has to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// How reading a request head ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The bytes up to and including the blank line.
    Complete(Vec<u8>),
    /// More than `MAX_REQUEST` bytes without the blank line.
    TooLarge,
    /// The client closed, timed out or failed before the blank line.
    Incomplete,
}

/// Reads one request head (a body, which GET has not, is never read).
pub fn read_head(r: &mut impl Read, deadline: Instant) -> Head {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        match find_blank_line(&head) {
            Some(end) if end <= MAX_REQUEST => {
                head.truncate(end);
                return Head::Complete(head);
            }
            Some(_) => return Head::TooLarge,
            None if head.len() > MAX_REQUEST => return Head::TooLarge,
            None => {}
        }
        if Instant::now() >= deadline {
            return Head::Incomplete;
        }
        match r.read(&mut buf) {
            Ok(0) => return Head::Incomplete,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            // The socket's short read timeout: look at the deadline again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return Head::Incomplete,
        }
    }
}

fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The answer to a head, with `body` called only for a scrape.
pub fn respond(head: &Head, body: impl FnOnce() -> String) -> Vec<u8> {
    let (status, extra, text) = match head {
        Head::TooLarge => (
            "431 Request Header Fields Too Large",
            "",
            format!("request head over {MAX_REQUEST} bytes\n"),
        ),
        Head::Incomplete => ("400 Bad Request", "", "incomplete request\n".to_string()),
        Head::Complete(h) => {
            let line = h.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.trim_end().split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(method), Some(target), Some(version))
                    if version.starts_with("HTTP/1.")
                        && !method.is_empty()
                        && method.bytes().all(|b| b.is_ascii_uppercase()) =>
                {
                    let path = target.split('?').next().unwrap_or_default();
                    if path != "/metrics" {
                        ("404 Not Found", "", "only /metrics is served\n".to_string())
                    } else if method != "GET" {
                        (
                            "405 Method Not Allowed",
                            "Allow: GET\r\n",
                            "only GET is served\n".to_string(),
                        )
                    } else {
                        return answer(
                            "200 OK",
                            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n",
                            &body(),
                        );
                    }
                }
                _ => (
                    "400 Bad Request",
                    "",
                    "not an HTTP/1.x request\n".to_string(),
                ),
            }
        }
    };
    answer(
        status,
        &format!("Content-Type: text/plain; charset=utf-8\r\n{extra}"),
        &text,
    )
}

fn answer(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve_one(mut stream: TcpStream, body: &(dyn Fn() -> String + Send + Sync)) {
    // A short read timeout so the deadline is checked even when the client sends nothing.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let head = read_head(&mut stream, Instant::now() + READ_DEADLINE);
    let _ = stream.write_all(&respond(&head, body));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Serves `listener` on a thread of its own for the rest of the process; `body` renders a scrape.
pub fn serve(
    listener: TcpListener,
    body: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = stream.write_all(&answer(
                        "503 Service Unavailable",
                        "Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n",
                        "too many scrapes at once\n",
                    ));
                    continue;
                }
                let (slot, body) = (active.clone(), body.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        serve_one(stream, &*body);
                        slot.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    // The thread never ran: its slot is free again (the stream was dropped: closed).
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(resp: &[u8]) -> String {
        let s = String::from_utf8_lossy(resp);
        s.lines().next().unwrap_or_default().to_string()
    }

    fn ask(req: &[u8]) -> String {
        let head = read_head(
            &mut std::io::Cursor::new(req.to_vec()),
            Instant::now() + READ_DEADLINE,
        );
        String::from_utf8(respond(&head, || "m_total 1\n# EOF\n".into())).unwrap()
    }

    #[test]
    fn a_scrape_gets_the_metrics_other_paths_404_other_methods_405() {
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 16\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm_total 1\n# EOF\n"), "{ok}");
        assert!(ask(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
        assert_eq!(
            status(ask(b"GET / HTTP/1.1\r\n\r\n").as_bytes()),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(ask(b"GET /metricsx HTTP/1.1\r\n\r\n").as_bytes()),
            "HTTP/1.1 404 Not Found"
        );
        let post = ask(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(status(post.as_bytes()), "HTTP/1.1 405 Method Not Allowed");
        assert!(post.contains("Allow: GET\r\n"));
        assert_eq!(
            status(ask(b"HEAD /metrics HTTP/1.1\r\n\r\n").as_bytes()),
            "HTTP/1.1 405 Method Not Allowed"
        );
    }

    #[test]
    fn oversized_incomplete_and_garbage_requests_are_refused_without_rendering() {
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_REQUEST + 10 {
            big.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        big.extend_from_slice(b"\r\n");
        let head = read_head(
            &mut std::io::Cursor::new(big),
            Instant::now() + READ_DEADLINE,
        );
        assert!(
            matches!(head, Head::TooLarge),
            "an oversized head was not refused"
        );
        let resp = respond(&head, || panic!("rendered for an oversized request"));
        assert_eq!(
            status(&resp),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(
            status(ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").as_bytes()),
            "HTTP/1.1 400 Bad Request"
        );
        for garbage in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                status(ask(garbage).as_bytes()),
                "HTTP/1.1 400 Bad Request",
                "{garbage:?}"
            );
        }
    }

    /// Over real sockets on the test's loopback: a client that connects and sends nothing neither
    /// stalls another scrape nor holds its connection past the read deadline.
    #[test]
    fn a_silent_client_neither_stalls_a_scrape_nor_keeps_its_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        serve(l, Arc::new(|| "up 1\n# EOF\n".to_string())).unwrap();
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).unwrap();
        let mut scrape = TcpStream::connect(addr).unwrap();
        scrape.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut got = String::new();
        scrape.read_to_string(&mut got).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 200 OK") && got.ends_with("up 1\n# EOF\n"),
            "{got}"
        );
        assert!(started.elapsed() < READ_DEADLINE, "{:?}", started.elapsed());
        silent.set_read_timeout(Some(READ_DEADLINE * 3)).unwrap();
        let mut rest = String::new();
        silent.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 400 Bad Request"), "{rest}");
        let held = started.elapsed();
        assert!(
            held >= READ_DEADLINE && held < READ_DEADLINE * 2,
            "{held:?}"
        );
    }
}
