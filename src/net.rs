//! TCP_NODELAY where the libraries leave it off.
//!
//! Without it, Nagle's algorithm holds back the last piece of a message that spans several
//! TCP segments until the previous one is acknowledged, and the peer's delayed ACK makes
//! that ~40 ms: a gRPC response of a few KiB, or a large SQL statement (written in pieces
//! under TLS), stalls that long.
//!
//! - gRPC: the server accepts through tonic's `TcpIncoming` with nodelay on (`server.rs`).
//! - PostgreSQL: sqlx-core 0.9.0 no longer sets it on its connections (upstream issue
//!   <https://github.com/transact-rs/sqlx/issues/4335>, fixed by
//!   <https://github.com/transact-rs/sqlx/pull/4336>, not in a released version yet), and
//!   offers no hook that sees the socket. So each new connection asks the server for its
//!   client port (`inet_client_port()`), and the socket of this process bound to that local
//!   port gets the option ([`set_nodelay_on_local_port`], Linux: `/proc/self/fd`). Remove this
//!   once a released sqlx sets TCP_NODELAY itself.

use std::sync::atomic::{AtomicBool, Ordering};

/// Sets TCP_NODELAY on the PostgreSQL connection `connection` (called as each new pooled
/// connection is made). A connection over a Unix socket needs nothing; one whose socket
/// cannot be found (another OS, or behind a proxy that makes the server see another port)
/// is left as it is, said once in the log.
pub async fn nodelay_for_postgres(
    connection: &mut sea_orm::sqlx::PgConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let port: Option<i32> = sea_orm::sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *connection)
        .await?;
    let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
        return Ok(());
    };
    match set_nodelay_on_local_port(port) {
        Ok(true) => {}
        Ok(false) if !SAID.swap(true, Ordering::Relaxed) => tracing::info!(
            port,
            "cannot find the socket of a PostgreSQL connection to set TCP_NODELAY on; \
             large statements may stall ~40 ms"
        ),
        Ok(false) => {}
        Err(err) if !SAID.swap(true, Ordering::Relaxed) => {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY on a PostgreSQL connection")
        }
        Err(_) => {}
    }
    Ok(())
}

/// Sets TCP_NODELAY on this process's TCP socket bound to local port `port`; whether there
/// was one.
pub fn set_nodelay_on_local_port(port: u16) -> std::io::Result<bool> {
    let mut result = Ok(false);
    each_socket(|socket| {
        if local_port(&socket) != Some(port) || peer_port(&socket).is_none() {
            return false;
        }
        result = socket.set_tcp_nodelay(true).map(|()| true);
        true
    });
    result
}

/// TCP_NODELAY of this process's TCP socket bound to local port `local`, and connected to
/// port `peer` when given; `None` when there is no such socket (for tests and diagnostics).
pub fn nodelay_of(local: u16, peer: Option<u16>) -> Option<bool> {
    let mut found = None;
    each_socket(|socket| {
        let peer_matches = peer.is_none_or(|p| peer_port(&socket) == Some(p));
        if local_port(&socket) != Some(local) || !peer_matches {
            return false;
        }
        found = socket.tcp_nodelay().ok();
        true
    });
    found
}

fn local_port(socket: &socket2::SockRef<'_>) -> Option<u16> {
    socket.local_addr().ok()?.as_socket().map(|a| a.port())
}

fn peer_port(socket: &socket2::SockRef<'_>) -> Option<u16> {
    socket.peer_addr().ok()?.as_socket().map(|a| a.port())
}

/// Calls `found` with each socket this process has open, until it returns true.
#[cfg(target_os = "linux")]
fn each_socket(mut found: impl FnMut(socket2::SockRef<'_>) -> bool) {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok());
        let (true, Some(fd)) = (is_socket, fd) else {
            continue;
        };
        // SAFETY: `fd` was open when listed. Another thread may close it (or reuse the number)
        // before the calls below; they are only getsockname, getpeername, getsockopt and
        // setsockopt, which then fail with EBADF or apply to that other socket (matched by
        // port first): no memory is touched through the descriptor, and it is never closed
        // here, as a `BorrowedFd` does not close on drop.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if found(socket2::SockRef::from(&borrowed)) {
            return;
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn each_socket(_found: impl FnMut(socket2::SockRef<'_>) -> bool) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_socket_of_a_local_port_is_found_and_gets_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let port = client.local_addr().unwrap().port();
        client.set_nodelay(false).unwrap();
        let server_port = listener.local_addr().unwrap().port();
        assert_eq!(nodelay_of(port, Some(server_port)), Some(false));
        assert!(set_nodelay_on_local_port(port).unwrap());
        assert!(client.nodelay().unwrap());
        assert_eq!(nodelay_of(port, None), Some(true));
        assert_eq!(nodelay_of(port, Some(1)), None, "another peer");
    }
}
