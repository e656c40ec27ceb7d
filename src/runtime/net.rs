//! TCP through glommio: connecting (with a deadline and a source address), listeners,
//! reads and writes, and the socket options on unsent bytes (`SIOCOUTQNSD`,
//! `TCP_NOTSENT_LOWAT`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::{exec::blocking, time::timeout};

/// Bytes a TCP socket holds that it has not sent yet (`SIOCOUTQNSD`): what its peer's
/// window or the path's congestion window keeps back. `None` if the socket cannot say.
/// `fd` must be a socket the caller holds open.
pub fn unsent_bytes(fd: std::os::fd::RawFd) -> Option<u64> {
    // linux/sockios.h; libc does not define it.
    const SIOCOUTQNSD: libc::Ioctl = 0x894B;
    let mut n: libc::c_int = 0;
    // SAFETY: the ioctl writes one int through a valid pointer; a bad fd only fails.
    let r = unsafe { libc::ioctl(fd, SIOCOUTQNSD, &mut n as *mut libc::c_int) };
    (r == 0).then(|| u64::try_from(n).unwrap_or(0))
}

/// Whether TCP socket `fd` is closed (`TCP_CLOSE`: reset by the peer, or closed both
/// ways): it sends nothing more, and its [`unsent_bytes`] keep counting what was queued
/// when it died, so they no longer say the client is slow. False when it cannot tell.
pub fn socket_closed(fd: std::os::fd::RawFd) -> bool {
    /// `TCP_CLOSE` in the kernel's TCP states (include/net/tcp_states.h).
    const TCP_CLOSE: u8 = 7;
    // SAFETY: tcp_info is plain data, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes through a valid pointer to `info`
    // and updates `len`; a bad fd only fails.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && info.tcpi_state == TCP_CLOSE
}

/// Makes writes to TCP socket `fd` wait while it holds `bytes` or more it has not sent
/// (`TCP_NOTSENT_LOWAT`); best effort.
pub fn limit_unsent(fd: std::os::fd::RawFd, bytes: u64) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one int through a valid pointer; a bad fd only fails.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Connects with a deadline and sets `TCP_NODELAY` (we write whole frames ourselves).
pub async fn connect(addr: SocketAddr, d: Duration) -> io::Result<TcpStream> {
    let s = match timeout(d, TcpStream::connect(addr)).await {
        Ok(r) => r.map_err(io::Error::from)?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Connects from a chosen source address (`--bind`, so that several nodes on one
/// machine, each on its own loopback address, are told apart by the nodes they
/// connect to), with a deadline, and sets `TCP_NODELAY`. Without a source address, or
/// when its family differs from `addr`'s, the kernel picks one as for [`connect`].
pub async fn connect_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    d: Duration,
) -> io::Result<TcpStream> {
    let Some(src) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) else {
        return connect(addr, d).await;
    };
    // glommio's connect takes no source address; a bound socket connects on the
    // blocking pool instead (connections to upstreams are few and long-lived).
    let socket = blocking(move || -> io::Result<socket2::Socket> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect_timeout(&addr.into(), d)?;
        Ok(s)
    })
    .await?;
    // SAFETY: the fd comes from a connected socket whose ownership we take.
    let s = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Turns a listening std socket (bound before the shards start, with `SO_REUSEPORT`)
/// into this shard's listener.
pub fn listener_from_std(l: std::net::TcpListener) -> TcpListener {
    // SAFETY: the fd comes from a live listening socket whose ownership we take.
    unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }
}

/// Reads into the free tail of `buf`, growing it by up to `max_read` bytes. Returns the
/// number of bytes read; 0 means the peer closed.
pub async fn read_some<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut bytes::BytesMut,
    max_read: usize,
) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + max_read, 0);
    let r = s.read(&mut buf[len..]).await;
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(len + n);
    r
}

/// Writes all of `parts` in order (header and block payload without joining them).
pub async fn write_all_parts<S: futures_lite::AsyncWrite + Unpin>(
    s: &mut S,
    parts: &[&[u8]],
) -> io::Result<()> {
    for p in parts {
        s.write_all(p).await?;
    }
    Ok(())
}
