//! Typed views over packet bytes. Parsing validates lengths once; the
//! accessors then read fields in place. Nothing here allocates or reads the
//! clock.

pub mod ip;
pub mod tcp;

use std::fmt;

/// Why a packet could not be parsed. The caller decides what that means
/// (for NFQUEUE: accept the packet unchanged and count it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its headers say.
    Truncated,
    /// A field holds a value no valid packet has.
    Malformed,
    /// Valid, but not something pepwrt handles (not TCP, a fragment, ...).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Unsupported => "unsupported packet",
        })
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// Parses an IP packet carrying TCP into its IP representation and a view
/// of the TCP segment (payload cut to what the IP length says).
pub fn parse_tcp(pkt: &[u8]) -> Result<(ip::IpRepr, tcp::Segment<'_>)> {
    let ip = ip::parse(pkt)?;
    let end = (ip.l4_offset + ip.l4_len).min(pkt.len());
    let seg = tcp::Segment::new_checked(&pkt[ip.l4_offset..end])?;
    Ok((ip, seg))
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
