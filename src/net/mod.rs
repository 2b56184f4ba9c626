//! Sockets and the transports over them: listener creation, and the sans-IO
//! layers (TLS, WebSocket) between a socket's bytes and the MQTT codec.
//! No MQTT here.

pub(crate) mod layer;
pub(crate) mod proxy;
pub(crate) mod tls;
pub(crate) mod ws;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one listening socket with SO_REUSEPORT, so every shard can bind its own on
/// the same address and the kernel spreads incoming connections over them. Built by
/// hand (not glommio's `TcpListener::bind`) to choose the backlog, which glommio
/// fixes at 1024.
pub(crate) fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// The cluster's sockets on `addr`: UDP for membership, then a TCP listener for
/// node links on the same port (the UDP socket resolves port 0). No SO_REUSEPORT:
/// one process per cluster address.
pub(crate) fn bind_cluster(addr: SocketAddr) -> io::Result<(OwnedFd, OwnedFd, SocketAddr)> {
    let udp = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    udp.set_nonblocking(true)?;
    udp.bind(&addr.into())?;
    let bound = udp
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let tcp = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    tcp.set_reuse_address(true)?;
    tcp.set_nonblocking(true)?;
    // Accepted links inherit it (set before listen, so the window scale fits).
    tcp.set_recv_buffer_size(crate::shard::LINK_SOCKET_BUFFER)?;
    tcp.bind(&bound.into())?;
    tcp.listen(128)?;
    Ok((udp.into(), tcp.into(), bound))
}

/// Fails with `AddrInUse` when another socket already listens on `addr`.
///
/// SO_REUSEPORT would otherwise let a second broker (of the same user) bind the same
/// port and silently take half of the new connections: the kernel spreads them over
/// every socket in the group. The probe binds without SO_REUSEPORT (but with
/// SO_REUSEADDR, so connections in TIME_WAIT do not count) and closes at once.
pub(crate) fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// The address a listening socket is bound to (resolves port 0).
pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(fd);
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an inet socket"))
}
