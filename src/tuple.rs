//! What identifies a split connection and what its SYN told us: small
//! types that admission, the pool and the relay all speak.

use std::net::SocketAddr;

use crate::wire::tcp::SynOptions;

/// A connection's endpoints as the client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// What the admitted SYN told us, kept for the outgoing leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynInfo {
    pub tuple: FourTuple,
    pub tos: u8,
    pub options: SynOptions,
}
