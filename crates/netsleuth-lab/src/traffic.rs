//! TCP traffic with real sockets: servers that run as threads inside a pod namespace, and client
//! helpers (connect with a bound source and a timeout, keepalive, reading the TCP timestamp clock)
//! that callers run on threads inside a namespace (see [`crate::netns::Netns::spawn`]).

use crate::error::{LabError, Result};
use crate::netns::{Daemon, Netns};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of a client socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOpts {
    /// Bind to this source before connecting.
    pub bind: Option<SocketAddrV4>,
    /// SO_KEEPALIVE with TCP_KEEPIDLE/TCP_KEEPINTVL in seconds (and 3 probes).
    pub keepalive: Option<(u32, u32)>,
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) -> std::io::Result<()> {
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// SO_REUSEADDR, then bind to `addr`.
fn bind_reusing(fd: i32, addr: SocketAddrV4) -> std::io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let sa = sockaddr(addr);
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Connects with `opts`, giving up after `timeout` (the SYN retransmissions within it are the
/// kernel's: 1 s, then 3 s after the first SYN, …).
pub fn connect(
    dst: SocketAddrV4,
    timeout: Duration,
    opts: ConnectOpts,
) -> std::io::Result<TcpStream> {
    prepare(opts)?.connect(dst, timeout)
}

/// A socket made, optioned and bound, not yet connected: splitting the two lets callers send SYNs
/// from several threads within microseconds of each other.
pub struct Prepared(TcpStream);

/// Creates a non-blocking socket with `opts` applied.
pub fn prepare(opts: ConnectOpts) -> std::io::Result<Prepared> {
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Owned from here on, so every early return closes it.
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(src) = opts.bind {
            bind_reusing(fd, src)?;
        }
        if let Some((idle, intvl)) = opts.keepalive {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
            setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle as i32)?;
            setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, intvl as i32)?;
            setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
        }
        Ok(Prepared(stream))
    }
}

impl Prepared {
    /// Sends the SYN and waits up to `timeout` for the handshake.
    pub fn connect(self, dst: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
        let stream = self.0;
        let fd = stream.as_raw_fd();
        unsafe {
            let sa = sockaddr(dst);
            let r = libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if r != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINPROGRESS) {
                    return Err(e);
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                let n = libc::poll(&mut pfd, 1, ms);
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect timed out after {:.1} s", timeout.as_secs_f64()),
                    ));
                }
                let mut err: i32 = 0;
                let mut len = std::mem::size_of::<i32>() as u32;
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut i32).cast(),
                    &mut len,
                );
                if err != 0 {
                    return Err(std::io::Error::from_raw_os_error(err));
                }
            }
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// The connection's current TCP timestamp clock (TSval it would send now), `getsockopt(TCP_TIMESTAMP)`.
pub fn tcp_timestamp(s: &TcpStream) -> Option<u32> {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as u32;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_TIMESTAMP,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// How many times the connection retransmitted so far (`TCP_INFO` `tcpi_total_retrans`): read right
/// after connect, the SYNs sent again before the handshake completed.
pub fn total_retransmissions(s: &TcpStream) -> Option<u32> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as u32;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info.tcpi_total_retrans)
}

/// A `TcpExt` counter of the calling thread's network namespace (`/proc/thread-self/net/netstat`).
pub fn tcp_ext_counter(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(head), Some(values)) = (lines.next(), lines.next()) {
        if !head.starts_with("TcpExt:") {
            continue;
        }
        let i = head.split_whitespace().position(|h| h == name)?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

/// The local port of a socket.
pub fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Names an I/O error the way an application log would (`ECONNRESET`, `ETIMEDOUT`, …).
pub fn errno_name(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        _ if e.kind() == std::io::ErrorKind::TimedOut
            || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            "timeout"
        }
        _ => return e.to_string(),
    };
    name.to_string()
}

/// What a server does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Echo every read back, prefixed with the server's name (so the client knows who answered).
    Echo,
    /// Answer one request with `bytes` bytes and close (server-side active close).
    RespondAndClose { bytes: usize },
    /// Read a little and close with unread data queued: the kernel sends RST (a normal application
    /// reset).
    CloseWithUnread,
    /// Never accept (listen queue scenarios).
    NeverAccept,
    /// Echo the first request; when the next one comes (after however long a silence), abort the
    /// connection (SO_LINGER 0, close): the kernel sends RST|ACK, an application's own reset.
    AbortOnSecondRequest,
}

/// A server thread (plus per-connection threads); stopped and joined when dropped.
pub struct TcpServer {
    _daemon: Daemon,
    pub accepted: Arc<AtomicU64>,
}

/// Listens on `bind` inside `ns` with `backlog`, serving each connection with `behaviour`.
pub fn serve(
    ns: &Netns,
    name: &str,
    bind: SocketAddrV4,
    backlog: i32,
    behaviour: Behaviour,
) -> Result<TcpServer> {
    let accepted = Arc::new(AtomicU64::new(0));
    let acc = Arc::clone(&accepted);
    let server_name = name.to_string();
    let daemon = Daemon::start(ns, "tcp-server", move |ctl| {
        let listener =
            listen(bind, backlog).map_err(|e| LabError::io(format!("listen on {bind}"), e))?;
        ctl.ready();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        while !ctl.stopping() {
            if behaviour == Behaviour::NeverAccept {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match listener.accept() {
                Ok((conn, _)) => {
                    acc.fetch_add(1, Ordering::SeqCst);
                    let (st, nm) = (Arc::clone(&stop), server_name.clone());
                    workers.push(std::thread::spawn(move || {
                        handle(conn, behaviour, &nm, &st)
                    }));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    })?;
    Ok(TcpServer {
        _daemon: daemon,
        accepted,
    })
}

fn listen(bind: SocketAddrV4, backlog: i32) -> std::io::Result<TcpListener> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = TcpListener::from_raw_fd(fd);
        bind_reusing(fd, bind)?;
        if libc::listen(fd, backlog) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

fn handle(mut conn: TcpStream, behaviour: Behaviour, name: &str, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    match behaviour {
        Behaviour::Echo => {
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let mut reply = format!("{name}:").into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        if conn.write_all(&reply).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
        Behaviour::RespondAndClose { bytes } => {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        let _ = conn.write_all(&vec![b'x'; bytes]);
                        return; // drop: active close, FIN first
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
        Behaviour::CloseWithUnread => {
            let _ = conn.read(&mut buf[..8]);
            // Give the rest of the client's request time to arrive, so that it is unread at close.
            std::thread::sleep(Duration::from_millis(50));
        }
        Behaviour::NeverAccept => {}
        Behaviour::AbortOnSecondRequest => {
            let mut requests = 0;
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) if requests == 0 => {
                        requests += 1;
                        let mut reply = format!("{name}:").into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        if conn.write_all(&reply).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {
                        // l_onoff=1, l_linger=0: close() discards the connection with a RST.
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        unsafe {
                            libc::setsockopt(
                                conn.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&linger as *const libc::linger).cast(),
                                std::mem::size_of::<libc::linger>() as u32,
                            )
                        };
                        return;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// Sends `msg` and waits for one reply; returns the reply text.
pub fn request(s: &mut TcpStream, msg: &str, timeout: Duration) -> std::io::Result<String> {
    s.set_read_timeout(Some(timeout))?;
    s.write_all(msg.as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed",
        ));
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}
