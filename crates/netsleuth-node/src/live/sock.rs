//! Netlink sockets for the live sources: a socket of a netlink family, bound to multicast groups (event
//! sockets) or not (dump sockets), non-blocking so one `poll` loop serves every source of every
//! namespace. A socket belongs to the namespace of the thread that opened it, for its whole life: the
//! sources open theirs inside the namespace (`collect::run::in_netns`) and are read from anywhere.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What one non-blocking receive gave.
#[derive(Debug)]
pub enum Recv {
    /// `n` bytes are in the buffer.
    Data(usize),
    /// Nothing waiting.
    Empty,
    /// The kernel dropped messages for this socket (its receive buffer was full): events are lost.
    Overrun,
}

/// Opens a netlink socket of `protocol` (NETLINK_NETFILTER, NETLINK_ROUTE, NETLINK_SOCK_DIAG) in the
/// calling thread's namespace, bound to `groups` (a bit mask, 0 for none), with `rcvbuf` bytes of
/// receive buffer when given (`SO_RCVBUFFORCE` first, as root may exceed `rmem_max`).
pub fn open(protocol: i32, groups: u32, rcvbuf: Option<i32>) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket calls on an fd we own; every buffer is passed with its length.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(size) = rcvbuf {
        let set = |opt| unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if set(libc::SO_RCVBUFFORCE) != 0 {
            set(libc::SO_RCVBUF);
        }
    }
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends one request.
pub fn send(fd: &OwnedFd, req: &[u8]) -> std::io::Result<()> {
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One non-blocking receive.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Recv> {
    loop {
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(Recv::Data(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Recv::Empty),
            Some(libc::ENOBUFS) => return Ok(Recv::Overrun),
            _ => return Err(e),
        }
    }
}

/// Receives up to `lens.len()` messages in one call (`recvmmsg`): message `i` lands in the `i`-th
/// `slot`-byte piece of `buf` and its length in `lens[i]`; `Data(n)` says how many arrived. One
/// system call per batch instead of one per event: a netlink event is one message, so at 100 k
/// conntrack events/s a plain `recv` loop makes 100 k calls a second.
pub fn recv_batch(
    fd: RawFd,
    buf: &mut [u8],
    slot: usize,
    lens: &mut [usize],
) -> std::io::Result<Recv> {
    let count = lens.len().min(buf.len() / slot.max(1));
    if count == 0 {
        return Ok(Recv::Empty);
    }
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_exact_mut(slot)
        .take(count)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr are valid "no name, no control" headers; each points at one iovec
    // that points into `buf`, which outlives the call.
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    loop {
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            for (len, h) in lens.iter_mut().zip(&hdrs).take(n as usize) {
                *len = (h.msg_len as usize).min(slot);
            }
            return Ok(Recv::Data(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Recv::Empty),
            Some(libc::ENOBUFS) => return Ok(Recv::Overrun),
            _ => return Err(e),
        }
    }
}

/// Receives a whole dump reply (until NLMSG_DONE or an error message), waiting up to `timeout_ms`
/// for each buffer; `on_buf` sees each buffer and says whether the dump is over.
pub fn recv_dump(
    fd: &OwnedFd,
    timeout_ms: i32,
    mut on_buf: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no dump reply within {timeout_ms} ms"),
            ));
        }
        match recv(fd.as_raw_fd(), &mut buf)? {
            Recv::Data(0) => return Ok(()),
            Recv::Data(n) => {
                if on_buf(&buf[..n]) {
                    return Ok(());
                }
            }
            Recv::Empty => continue,
            Recv::Overrun => {
                return Err(std::io::Error::from_raw_os_error(libc::ENOBUFS));
            }
        }
    }
}
