//! Error type of the proxy crate.

use std::net::SocketAddr;

/// Errors returned by [`crate::FrontEndpoint`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Another socket already listens on the requested address.
    #[error(
        "cannot listen on {addr}: the address is already in use (another process is listening on that port)"
    )]
    AddrInUse {
        /// The address that was requested.
        addr: SocketAddr,
    },
    /// The process is not allowed to bind the requested address (e.g. a privileged port).
    #[error("cannot listen on {addr}: permission denied")]
    PermissionDenied {
        /// The address that was requested.
        addr: SocketAddr,
    },
    /// The requested address does not belong to this machine.
    #[error("cannot listen on {addr}: the address is not available on this machine")]
    AddrNotAvailable {
        /// The address that was requested.
        addr: SocketAddr,
    },
    /// Any other error while creating the listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was requested.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket's local address could not be read.
    #[error("cannot read the local address of the listener bound to {addr}: {source}")]
    LocalAddr {
        /// The address that was requested.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The soft limit on open files could not be read or raised.
    #[error(
        "cannot raise the limit on open files (soft {}, hard {}): {source}",
        fmt_limit(*soft),
        fmt_limit(*hard)
    )]
    FdLimit {
        /// The soft limit before the attempt, if it could be read.
        soft: Option<u64>,
        /// The hard limit, if it could be read.
        hard: Option<u64>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn fmt_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unknown".to_owned(), |l| l.to_string())
}

impl ProxyError {
    /// Classifies an I/O error returned by `bind(2)` for `addr`.
    pub(crate) fn from_bind(addr: SocketAddr, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::AddrInUse => Self::AddrInUse { addr },
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied { addr },
            std::io::ErrorKind::AddrNotAvailable => Self::AddrNotAvailable { addr },
            _ => Self::Bind { addr, source },
        }
    }
}
