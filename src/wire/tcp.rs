//! TCP header view and options.

use super::{Error, Result, be16, be32};

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    #[cfg(test)]
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Where each field of the TCP header lies (RFC 9293, 3.1).
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset in the high nibble, in 32-bit words.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    /// Where the options start: the end of the fixed header.
    pub const OPTIONS: usize = 20;
}

/// TCP option kinds (IANA "TCP Parameters").
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
    /// TCP-MD5 signature (RFC 2385).
    pub const MD5: u8 = 19;
    /// TCP authentication option (RFC 5925).
    pub const AUTH: u8 = 29;
    pub const FAST_OPEN: u8 = 34;
}

/// A TCP segment: header fields read in place from `buf`.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Segment<'a> {
    /// Checks that the fixed header and options fit in `buf`, which holds
    /// the TCP header and payload (as far as the capture reached).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < field::OPTIONS {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(buf[field::DATA_OFFSET] >> 4) * 4;
        if header_len < field::OPTIONS {
            return Err(Error::Malformed);
        }
        if buf.len() < header_len {
            return Err(Error::Truncated);
        }
        Ok(Segment { buf, header_len })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf, field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, field::DST_PORT)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf, field::SEQ)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf, field::ACK)
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn flags(&self) -> u8 {
        self.buf[field::FLAGS]
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }
    pub fn window(&self) -> u16 {
        be16(self.buf, field::WINDOW)
    }
    pub fn options(&self) -> Options<'a> {
        Options {
            rest: &self.buf[field::OPTIONS..self.header_len],
        }
    }
    /// The payload bytes present in the buffer (a capture may be cut short).
    #[cfg(test)]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

/// One TCP option, as far as pepwrt cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// Up to four (left, right) edges, raw.
    Sack(&'a [u8]),
    Timestamps {
        value: u32,
        echo: u32,
    },
    FastOpen(&'a [u8]),
    Other {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterates the options area; yields `Err` once and stops on a bad length.
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&kind, tail) = self.rest.split_first()?;
            match kind {
                option::END => {
                    self.rest = &[];
                    return None;
                }
                option::NOP => {
                    self.rest = tail;
                    continue;
                }
                _ => {}
            }
            let len = match tail.first() {
                Some(&l) if l >= 2 && usize::from(l) <= self.rest.len() => usize::from(l),
                _ => {
                    self.rest = &[];
                    return Some(Err(Error::Malformed));
                }
            };
            let data = &self.rest[2..len];
            self.rest = &self.rest[len..];
            let fixed = |want: usize| {
                if data.len() == want {
                    Ok(())
                } else {
                    Err(Error::Malformed)
                }
            };
            let opt = match kind {
                option::MSS => fixed(2).map(|_| TcpOption::Mss(be16(data, 0))),
                option::WINDOW_SCALE => fixed(1).map(|_| TcpOption::WindowScale(data[0])),
                option::SACK_PERMITTED => fixed(0).map(|_| TcpOption::SackPermitted),
                option::SACK if data.len().is_multiple_of(8) && !data.is_empty() => {
                    Ok(TcpOption::Sack(data))
                }
                option::SACK => Err(Error::Malformed),
                option::TIMESTAMPS => fixed(8).map(|_| TcpOption::Timestamps {
                    value: be32(data, 0),
                    echo: be32(data, 4),
                }),
                option::FAST_OPEN => Ok(TcpOption::FastOpen(data)),
                _ => Ok(TcpOption::Other { kind, data }),
            };
            if opt.is_err() {
                self.rest = &[];
            }
            return Some(opt);
        }
    }
}

/// SACK blocks as (left, right) sequence edges.
pub fn sack_blocks(data: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    data.chunks_exact(8).map(|c| (be32(c, 0), be32(c, 4)))
}

/// What a client's SYN asked for, kept for the outgoing leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
    /// TCP-MD5 (RFC 2385) or TCP-AO (RFC 5925): the connection is signed
    /// end to end, and a proxy without the key cannot take part in it.
    pub signed: bool,
}

impl SynOptions {
    pub fn parse(seg: &Segment<'_>) -> Result<Self> {
        let mut o = SynOptions::default();
        for opt in seg.options() {
            match opt? {
                TcpOption::Mss(m) => o.mss = Some(m),
                TcpOption::WindowScale(s) => o.window_scale = Some(s),
                TcpOption::SackPermitted => o.sack_permitted = true,
                TcpOption::Timestamps { .. } => o.timestamps = true,
                TcpOption::Other {
                    kind: option::MD5 | option::AUTH,
                    ..
                } => o.signed = true,
                _ => {}
            }
        }
        Ok(o)
    }
}

/// Sequence-space comparison (RFC 793 modular arithmetic).
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Linux client's SYN header, 40 bytes: ports 40000 -> 80, seq
    /// 0x01020304, window 64240, options MSS 1460, SACK-permitted,
    /// timestamps, NOP, window scale 7.
    pub const SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, // ports
        0x01, 0x02, 0x03, 0x04, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // data offset 10 words, SYN, window
        0x00, 0x00, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // timestamps
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];

    #[test]
    fn syn_fields_and_options() {
        let s = Segment::new_checked(&SYN).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (40000, 80));
        assert_eq!(s.seq(), 0x01020304);
        assert!(s.has(flags::SYN) && !s.has(flags::ACK));
        assert_eq!(s.window(), 64240);
        let o = SynOptions::parse(&s).unwrap();
        assert_eq!(
            o,
            SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: true,
                signed: false
            }
        );
        assert!(s.payload().is_empty());
    }

    #[test]
    fn truncated_and_bad_offsets_are_rejected() {
        assert_eq!(
            Segment::new_checked(&SYN[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Segment::new_checked(&SYN[..39]).err(),
            Some(Error::Truncated)
        );
        let mut bad = SYN;
        bad[12] = 0x40; // data offset 16 bytes
        assert_eq!(Segment::new_checked(&bad).err(), Some(Error::Malformed));
    }

    #[test]
    fn bad_option_lengths_are_malformed_not_a_panic() {
        for (at, val) in [
            (21, 0u8),
            (21, 1),
            (21, 30),
            (21, 3),
            (25, 3),
            (27, 11),
            (37, 2),
        ] {
            let mut bad = SYN;
            bad[at] = val;
            let s = Segment::new_checked(&bad).unwrap();
            assert_eq!(
                SynOptions::parse(&s),
                Err(Error::Malformed),
                "byte {at} = {val}"
            );
        }
    }

    #[test]
    fn end_of_options_stops_the_walk() {
        let mut eol = SYN;
        eol[20] = 0; // EOL before MSS
        let s = Segment::new_checked(&eol).unwrap();
        assert_eq!(SynOptions::parse(&s).unwrap(), SynOptions::default());
    }

    #[test]
    fn sack_blocks_are_read_in_pairs() {
        let data = [0, 0, 0, 10, 0, 0, 0, 20, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 5];
        let blocks: Vec<_> = sack_blocks(&data).collect();
        assert_eq!(blocks, vec![(10, 20), (0xffff_fff0, 5)]);
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_lt(0xffff_fff0, 5));
        assert!(!seq_lt(5, 0xffff_fff0));
        assert!(seq_le(7, 7));
    }
}
