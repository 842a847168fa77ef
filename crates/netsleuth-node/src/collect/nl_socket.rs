//! The socket side of the netlink readers: a NETLINK_NETFILTER socket in the calling thread's network
//! namespace, one request sent, buffers received until the reader says the conversation is over. The
//! bytes sent and read are `parse::netlink`'s.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens a NETLINK_NETFILTER socket in the calling thread's network namespace, with a receive
/// timeout of `timeout_s` and an optional receive buffer size.
pub(crate) fn netfilter_socket(
    timeout_s: i64,
    rcvbuf: Option<libc::c_int>,
) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket calls on an fd we own; every buffer is passed with its length.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: timeout_s as libc::time_t,
        tv_usec: 0,
    };
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if let Some(size) = rcvbuf {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
    }
    Ok(fd)
}

/// Sends one request on a netlink socket.
pub(crate) fn send(fd: &OwnedFd, req: &[u8]) -> std::io::Result<()> {
    // SAFETY: the buffer is passed with its length.
    if unsafe {
        libc::send(
            fd.as_raw_fd(),
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A fresh NETLINK_NETFILTER socket with `req` sent on it: the common start of every dump.
pub(crate) fn netfilter_request(
    req: &[u8],
    timeout_s: i64,
    rcvbuf: Option<libc::c_int>,
) -> std::io::Result<OwnedFd> {
    let fd = netfilter_socket(timeout_s, rcvbuf)?;
    send(&fd, req)?;
    Ok(fd)
}

/// Receives on `fd` until `on_buf` says the conversation is over (or the socket has no more).
pub(crate) fn recv_until(
    fd: &OwnedFd,
    buf: &mut [u8],
    mut on_buf: impl FnMut(&[u8]) -> std::io::Result<bool>,
) -> std::io::Result<()> {
    loop {
        // SAFETY: the buffer is passed with its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 || on_buf(&buf[..n as usize])? {
            return Ok(());
        }
    }
}
