//! Start-up failures, worded for the admin, with the exit code each one
//! leaves with.

use std::io;
use std::net::SocketAddr;

/// A startup failure: what to fix, and the exit code (1 runtime failure,
/// 3 missing kernel support).
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    pub exit_code: u8,
}

impl StartError {
    pub fn new(message: impl Into<String>) -> StartError {
        StartError {
            message: message.into(),
            exit_code: 1,
        }
    }

    /// A transparent listener that could not bind, said so that the admin
    /// knows what to change.
    pub fn listener(addr: SocketAddr, e: &io::Error) -> StartError {
        StartError::new(match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "port {} is in use by another program: stop it or choose another --port",
                addr.port()
            ),
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "transparent sockets need root or CAP_NET_ADMIN".to_string()
            }
            _ => format!("listener on {addr}: {e}"),
        })
    }
}
