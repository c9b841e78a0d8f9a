//! IPv4 and IPv6 headers, down to the TCP segment they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Error, Result, be16};

const PROTO_TCP: u8 = 6;

/// Where each field of the IPv4 header lies (RFC 791, 3.1).
mod v4 {
    /// Version in the high nibble, header length (words) in the low one.
    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    /// Flags and fragment offset.
    pub const FRAGMENT: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const MIN_HEADER: usize = 20;
}

/// Where each field of the IPv6 header lies (RFC 8200, 3).
mod v6 {
    /// Version, traffic class and flow label.
    pub const VERSION_CLASS: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER: usize = 40;
}

/// The IP layer of a packet that carries TCP: addresses, traffic class, and
/// where the TCP header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRepr {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class (DSCP and ECN bits).
    pub tos: u8,
    /// Offset of the TCP header in the packet.
    pub l4_offset: usize,
    /// Length of the TCP header plus payload, from the IP length field.
    pub l4_len: usize,
}

/// Parses the IP header of a TCP packet, IPv4 or IPv6 by its version nibble.
pub fn parse(pkt: &[u8]) -> Result<IpRepr> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => parse_v4(pkt),
        Some(6) => parse_v6(pkt),
        Some(_) => Err(Error::Malformed),
        None => Err(Error::Truncated),
    }
}

fn parse_v4(pkt: &[u8]) -> Result<IpRepr> {
    if pkt.len() < v4::MIN_HEADER {
        return Err(Error::Truncated);
    }
    let ihl = usize::from(pkt[v4::VERSION_IHL] & 0x0f) * 4;
    let total = usize::from(be16(pkt, v4::TOTAL_LEN));
    if ihl < v4::MIN_HEADER || total < ihl {
        return Err(Error::Malformed);
    }
    if pkt.len() < ihl {
        return Err(Error::Truncated);
    }
    // Fragments other than the first carry no TCP header; a first fragment
    // of a SYN is too odd to trust. Both pass through untouched.
    let frag = be16(pkt, v4::FRAGMENT);
    if frag & 0x3fff != 0 {
        return Err(Error::Unsupported);
    }
    if pkt[v4::PROTOCOL] != PROTO_TCP {
        return Err(Error::Unsupported);
    }
    let addr = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            pkt[at],
            pkt[at + 1],
            pkt[at + 2],
            pkt[at + 3],
        ))
    };
    Ok(IpRepr {
        src: addr(v4::SRC),
        dst: addr(v4::DST),
        tos: pkt[v4::TOS],
        l4_offset: ihl,
        l4_len: total - ihl,
    })
}

/// Extension headers pepwrt walks past to reach TCP. Any other next header
/// (ESP, fragment, ...) makes the packet unsupported.
fn is_skippable_ext(next: u8) -> bool {
    matches!(
        next,
        0 /* hop-by-hop */ | 43 /* routing */ | 60 /* destination */
    )
}

fn parse_v6(pkt: &[u8]) -> Result<IpRepr> {
    if pkt.len() < v6::HEADER {
        return Err(Error::Truncated);
    }
    let tclass = ((be16(pkt, v6::VERSION_CLASS) >> 4) & 0xff) as u8;
    let payload = usize::from(be16(pkt, v6::PAYLOAD_LEN));
    let mut next = pkt[v6::NEXT_HEADER];
    let mut off = v6::HEADER;
    // Bounded: each step advances by at least 8 bytes inside the packet.
    while is_skippable_ext(next) {
        if pkt.len() < off + 2 {
            return Err(Error::Truncated);
        }
        next = pkt[off];
        off += (usize::from(pkt[off + 1]) + 1) * 8;
    }
    if next != PROTO_TCP {
        return Err(Error::Unsupported);
    }
    if off > pkt.len() {
        return Err(Error::Truncated);
    }
    if payload + v6::HEADER < off {
        return Err(Error::Malformed);
    }
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&pkt[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Ok(IpRepr {
        src: addr(v6::SRC),
        dst: addr(v6::DST),
        tos: tclass,
        l4_offset: off,
        l4_len: payload + v6::HEADER - off,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// IPv4 header of a SYN 198.18.0.2 -> 198.18.1.2, TOS 0x28, 40 bytes of
    /// TCP after it (as tcpdump -x shows it).
    pub const V4_HDR: [u8; 20] = [
        0x45, 0x28, 0x00, 0x3c, // version 4, IHL 5, TOS 0x28 (AF11), total 60
        0x12, 0x34, 0x40, 0x00, // id, DF
        0x40, 0x06, 0x00, 0x00, // TTL 64, proto TCP, checksum (unchecked)
        198, 18, 0, 2, // src
        198, 18, 1, 2, // dst
    ];

    #[test]
    fn v4_header_gives_addresses_tos_and_l4() {
        let mut pkt = V4_HDR.to_vec();
        pkt.extend_from_slice(&[0u8; 40]);
        let r = parse(&pkt).unwrap();
        assert_eq!(r.src, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.dst, "198.18.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.tos, 0x28);
        assert_eq!((r.l4_offset, r.l4_len), (20, 40));
    }

    #[test]
    fn v4_fragments_and_other_protocols_are_unsupported() {
        let mut frag = V4_HDR;
        frag[6] = 0x20; // more fragments
        assert_eq!(parse(&frag), Err(Error::Unsupported));
        let mut udp = V4_HDR;
        udp[9] = 17;
        assert_eq!(parse(&udp), Err(Error::Unsupported));
    }

    #[test]
    fn v4_bad_lengths_are_rejected() {
        assert_eq!(parse(&V4_HDR[..19]), Err(Error::Truncated));
        let mut bad = V4_HDR;
        bad[0] = 0x44; // IHL 4: shorter than the fixed header
        assert_eq!(parse(&bad), Err(Error::Malformed));
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&[0x50; 40]), Err(Error::Malformed));
    }

    pub fn v6_header(next: u8, payload: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0xb8, 0x00, 0x00]; // version 6, traffic class 0x0b
        p.extend_from_slice(&payload.to_be_bytes());
        p.push(next);
        p.push(64);
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:1::2".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    #[test]
    fn v6_walks_extension_headers_to_tcp() {
        let mut pkt = v6_header(0, 8 + 20);
        pkt.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, next TCP, 8 bytes
        pkt.extend_from_slice(&[0u8; 20]);
        let r = parse(&pkt).unwrap();
        assert_eq!(r.tos, 0x0b);
        assert_eq!((r.l4_offset, r.l4_len), (48, 20));
        assert_eq!(r.src, "fd00::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn v6_fragment_header_is_unsupported_and_short_is_truncated() {
        let pkt = v6_header(44, 0);
        assert_eq!(parse(&pkt), Err(Error::Unsupported));
        let mut ext = v6_header(60, 100);
        ext.extend_from_slice(&[6, 200]); // claims 1608 bytes of options
        assert_eq!(parse(&ext), Err(Error::Truncated));
        assert_eq!(parse(&pkt[..39]), Err(Error::Truncated));
    }
}
