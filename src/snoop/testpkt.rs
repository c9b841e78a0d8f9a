//! Builds the TCP/IP packets the unit tests feed to Snoop: a sender at
//! 198.18.1.2:80 (fd00:1::2) and a wireless host at 198.18.0.2:40000
//! (fd00::2). Checksums stay zero: Snoop never reads them.

use crate::wire::tcp::flags;

#[derive(Debug, Clone)]
pub struct TcpPkt {
    pub v6: bool,
    /// Sender to host (data) or host to sender (ACKs).
    pub toward_host: bool,
    pub host_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: usize,
    pub sack: Vec<(u32, u32)>,
}

impl TcpPkt {
    /// `len` bytes of data at `seq` from the sender.
    pub fn data(seq: u32, len: usize) -> TcpPkt {
        TcpPkt {
            v6: false,
            toward_host: true,
            host_port: 40000,
            seq,
            ack: 7,
            flags: flags::ACK | flags::PSH,
            window: 500,
            payload: len,
            sack: Vec::new(),
        }
    }

    /// A pure ACK from the host.
    pub fn ack(ack: u32) -> TcpPkt {
        TcpPkt {
            toward_host: false,
            seq: 7,
            ack,
            flags: flags::ACK,
            window: 1000,
            payload: 0,
            ..TcpPkt::data(0, 0)
        }
    }

    pub fn v6(mut self, v6: bool) -> TcpPkt {
        self.v6 = v6;
        self
    }

    pub fn with_flags(mut self, f: u8) -> TcpPkt {
        self.flags |= f;
        self
    }

    pub fn window(mut self, w: u16) -> TcpPkt {
        self.window = w;
        self
    }

    pub fn sack(mut self, blocks: &[(u32, u32)]) -> TcpPkt {
        self.sack = blocks.to_vec();
        self
    }

    pub fn port(mut self, p: u16) -> TcpPkt {
        self.host_port = p;
        self
    }

    fn tcp(&self) -> Vec<u8> {
        let (sport, dport) = if self.toward_host {
            (80, self.host_port)
        } else {
            (self.host_port, 80)
        };
        let mut opts = Vec::new();
        if !self.sack.is_empty() {
            opts.extend_from_slice(&[1, 1, 5, (2 + 8 * self.sack.len()) as u8]);
            for (l, r) in &self.sack {
                opts.extend_from_slice(&l.to_be_bytes());
                opts.extend_from_slice(&r.to_be_bytes());
            }
        }
        let hlen = 20 + opts.len();
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(((hlen / 4) as u8) << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(&opts);
        // Payload bytes that differ from segment to segment, so a test can
        // tell which packet was retransmitted.
        t.extend((0..self.payload).map(|i| self.seq.wrapping_add(i as u32) as u8));
        t
    }

    pub fn build(&self) -> Vec<u8> {
        let tcp = self.tcp();
        let mut p = Vec::new();
        let (sender, host) = if self.v6 {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[6, 63]);
            (addr6("fd00:1::2").to_vec(), addr6("fd00::2").to_vec())
        } else {
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 63, 6, 0, 0]);
            (vec![198, 18, 1, 2], vec![198, 18, 0, 2])
        };
        let (src, dst) = if self.toward_host {
            (sender, host)
        } else {
            (host, sender)
        };
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&tcp);
        p
    }
}

fn addr6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>()
        .map(|a| a.octets())
        .unwrap_or([0; 16])
}
