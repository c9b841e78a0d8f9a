//! Counters and the status report, as JSON and as text for people.

use std::fmt::Write;
use std::time::Instant;

use crate::admission::Decided;
use crate::duration;
use crate::link::{Estimate, LinkInForce, LinkLeg, LinkTicked};
use crate::pool::Pool;
use crate::relay::{Accepted, Conn, End, RefusalCount, Seconds};

#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// SYNs admitted for splitting.
    pub split: u64,
    /// Split connections accepted and relayed since start.
    pub total: u64,
    pub passed_full: u64,
    pub passed_policy: u64,
    /// Connections to the listener that pepwrt did not admit.
    pub refused: u64,
    pub malformed: u64,
    /// SYNs that repeated an earlier one of the same connection (a
    /// retransmission queued again before conntrack held the decision):
    /// decided as before, counted only here.
    pub syn_repeats: u64,
    pub connect_failed: u64,
    /// Bytes of finished connections; live ones are added when reporting.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Long legs handed from BBR to cubic because the peer's receive
    /// window held them back (relay/window.rs).
    pub handed_to_cubic: u64,
    /// Times a paced long leg's BBR was started afresh before its RTT
    /// probe was due (relay/rtt_probe.rs).
    pub rtt_probes_skipped: u64,
    /// Split connections opened with data in a SYN, without a round trip
    /// (--zero-rtt; counted when they end).
    pub zero_rtt_opens: u64,
}

impl Counters {
    /// A finished connection's bytes and, if it never connected, that.
    pub fn on_end(&mut self, conn: &Conn, end: End) {
        self.bytes_up += conn.bytes_up();
        self.bytes_down += conn.bytes_down();
        if conn.opened_with_syn_data() {
            self.zero_rtt_opens += 1;
        }
        if let End::ConnectFailed(_) | End::ConnectTimeout = end {
            self.connect_failed += 1;
        }
    }

    /// What a round of SYN admission decided.
    pub fn on_decided(&mut self, d: &Decided) {
        self.split += d.split;
        self.passed_full += d.passed_full;
        self.passed_policy += d.passed_policy;
        self.malformed += d.malformed;
        self.syn_repeats += d.repeats;
    }

    /// What a tick of the link's pass over the long legs did.
    pub fn on_link_tick(&mut self, t: &LinkTicked) {
        self.handed_to_cubic += t.handed_to_cubic;
        self.rtt_probes_skipped += t.rtt_probes_skipped;
    }

    /// An accepting round: connections taken in, clients refused.
    pub fn on_accepted(&mut self, accepted: &Accepted) {
        self.total += accepted.new.len() as u64;
        for r in &accepted.refused {
            match r {
                RefusalCount::ConnectFailed => self.connect_failed += 1,
                RefusalCount::NotRelayed => self.refused += 1,
            }
        }
    }
}

/// Everything a status report shows, borrowed from the running proxy.
pub struct Report<'a> {
    pub counters: &'a Counters,
    /// SYNs the kernel let through unseen because the queue socket was
    /// full.
    pub syn_dropped: u64,
    pub pool: &'a Pool<Conn>,
    pub started: Instant,
    pub now: Instant,
    pub buffer_bytes: u32,
    /// Snoop's JSON object, if Snoop runs.
    pub snoop: Option<&'a crate::snoop::Snoop>,
    /// The link settings and what they set, if given.
    pub link: Option<LinkInForce>,
    /// The link as the long legs measured it, once they have.
    pub learned: Option<Estimate>,
}

fn json_opt(out: &mut String, key: &str, v: Option<u64>) {
    match v {
        Some(v) => write!(out, "\"{key}\":{v},"),
        None => write!(out, "\"{key}\":null,"),
    }
    .unwrap_or(());
}

/// `{"uplink_bps":..,"downlink_bps":..,"rtt_ms":..,"leg":..,
/// "pacing_bps":..,"sndbuf_bytes":..,"rcvbuf_bytes":..,"route_initcwnd":..}`
/// or null.
fn write_link_json(out: &mut String, link: Option<LinkInForce>) {
    let Some(f) = link else {
        out.push_str("null");
        return;
    };
    out.push('{');
    json_opt(out, "uplink_bps", f.link.uplink_bps);
    json_opt(out, "downlink_bps", f.link.downlink_bps);
    let us = duration::micros(f.link.rtt);
    let _ = write!(
        out,
        "\"rtt_ms\":{}.{:03},\"leg\":\"{}\",",
        us / 1000,
        us % 1000,
        f.link.leg.name()
    );
    json_opt(out, "pacing_bps", f.pacing_bytes_per_s.map(|b| b * 8));
    json_opt(out, "sndbuf_bytes", f.sndbuf_bytes.map(u64::from));
    json_opt(out, "rcvbuf_bytes", f.rcvbuf_bytes.map(u64::from));
    json_opt(out, "route_initcwnd", f.route_initcwnd.map(u64::from));
    out.pop();
    out.push('}');
}

/// One line for people: the figures and what pepwrt does with them.
fn write_link_text(out: &mut String, f: LinkInForce) {
    let mbit = |bps: Option<u64>| match bps {
        Some(b) => format!("{}.{:03} Mbit/s", b / 1_000_000, b % 1_000_000 / 1000),
        None => "not set".to_string(),
    };
    let _ = write!(
        out,
        "link:        uplink {}, downlink {}, RTT {} ms; {} leg over the link",
        mbit(f.link.uplink_bps),
        mbit(f.link.downlink_bps),
        duration::millis(f.link.rtt),
        f.link.leg.name()
    );
    if let Some(p) = f.pacing_bytes_per_s {
        let _ = write!(out, ", paced at {}", mbit(Some(p * 8)));
    }
    if let Some(b) = f.sndbuf_bytes {
        let _ = write!(out, ", send buffer {b} bytes");
    }
    if let Some(b) = f.rcvbuf_bytes {
        let _ = write!(out, ", receive buffer {b} bytes");
    }
    if let Some(w) = f.route_initcwnd {
        let _ = write!(out, ", initial window {w} segments (routes, pepwrt rules)");
    }
    out.push('\n');
}

/// An endpoint as a JSON string: SocketAddr's Display has nothing to
/// escape.
fn json_endpoint(out: &mut String, addr: std::net::SocketAddr) {
    let _ = write!(out, "\"{addr}\"");
}

impl Report<'_> {
    fn live_bytes(&self) -> (u64, u64) {
        self.pool.active().fold((0, 0), |(u, d), (_, c)| {
            (u + c.bytes_up(), d + c.bytes_down())
        })
    }

    fn active(&self) -> usize {
        self.pool.active_count()
    }

    /// The text report, into the log line by line (SIGUSR1).
    pub fn log(&self) {
        let mut text = String::new();
        self.write_text(&mut text);
        for line in text.lines() {
            log::info!("{line}");
        }
    }

    pub fn render(&self, format: crate::control::Format, out: &mut String) {
        match format {
            crate::control::Format::Json => self.write_json(out),
            crate::control::Format::Text => self.write_text(out),
        }
    }

    pub fn write_json(&self, out: &mut String) {
        let c = self.counters;
        let (lu, ld) = self.live_bytes();
        let _ = write!(
            out,
            "{{\"version\":\"{}\",\"pid\":{},\"uptime_s\":{},\"max_conns\":{},\"buffer_bytes\":{},\"allocations\":{},",
            crate::config::VERSION,
            std::process::id(),
            self.now.duration_since(self.started).as_secs(),
            self.pool.capacity(),
            self.buffer_bytes,
            crate::sys::alloc_count::allocations(),
        );
        let _ = write!(
            out,
            "\"counters\":{{\"active\":{},\"total\":{},\"split\":{},\"passed\":{},\"passed_full\":{},\"passed_policy\":{},\"syn_dropped\":{},\"refused\":{},\"malformed\":{},\"syn_repeats\":{},\"connect_failed\":{},\"bytes_up\":{},\"bytes_down\":{},\"handed_to_cubic\":{},\"rtt_probes_skipped\":{},\"zero_rtt_opens\":{}}},",
            self.active(),
            c.total,
            c.split,
            c.passed_full + c.passed_policy,
            c.passed_full,
            c.passed_policy,
            self.syn_dropped,
            c.refused,
            c.malformed,
            c.syn_repeats,
            c.connect_failed,
            c.bytes_up + lu,
            c.bytes_down + ld,
            c.handed_to_cubic,
            c.rtt_probes_skipped,
            c.zero_rtt_opens,
        );
        out.push_str("\"link\":");
        write_link_json(out, self.link);
        match self.learned {
            Some(e) => {
                let us = duration::micros(e.min_rtt);
                let _ = write!(
                    out,
                    ",\"learned\":{{\"send_bps\":{},\"min_rtt_ms\":{}.{:03}}}",
                    e.send_bps,
                    us / 1000,
                    us % 1000
                );
            }
            None => out.push_str(",\"learned\":null"),
        }
        out.push_str(",\"snoop\":");
        match self.snoop {
            Some(sn) => sn.write_status_json(out),
            None => out.push_str("null"),
        }
        out.push_str(",\"connections\":[");
        let mut first = true;
        for (id, conn) in self.pool.active() {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{{\"id\":{},\"client\":", id.as_u32());
            json_endpoint(out, conn.tuple.client);
            out.push_str(",\"server\":");
            json_endpoint(out, conn.tuple.server);
            let _ = write!(
                out,
                ",\"age_s\":{},\"state\":\"{}\",\"bytes_up\":{},\"bytes_down\":{}}}",
                Seconds(self.now.duration_since(conn.started)),
                conn.state_name(),
                conn.bytes_up(),
                conn.bytes_down()
            );
        }
        out.push_str("]}\n");
    }

    pub fn write_text(&self, out: &mut String) {
        let c = self.counters;
        let (lu, ld) = self.live_bytes();
        let _ = writeln!(
            out,
            "pepwrt {} (pid {}), up {} s",
            crate::config::VERSION,
            std::process::id(),
            self.now.duration_since(self.started).as_secs()
        );
        let _ = writeln!(
            out,
            "pool:        {} of {} connections active, {} bytes of buffer per direction",
            self.active(),
            self.pool.capacity(),
            self.buffer_bytes
        );
        let _ = writeln!(
            out,
            "connections: {} split, {} relayed, {} passed unsplit ({} pool full, {} policy, {} unseen: queue socket full), {} refused, {} connect failed, {} malformed SYNs",
            c.split,
            c.total,
            c.passed_full + c.passed_policy + self.syn_dropped,
            c.passed_full,
            c.passed_policy,
            self.syn_dropped,
            c.refused,
            c.connect_failed,
            c.malformed
        );
        let _ = writeln!(
            out,
            "bytes:       {} up (client to server), {} down",
            c.bytes_up + lu,
            c.bytes_down + ld
        );
        if let Some(f) = self.link {
            write_link_text(out, f);
        }
        if let Some(e) = self.learned {
            let mbit = e.send_bps.div_ceil(1_000_000);
            let ms = duration::millis(e.min_rtt);
            // The long legs send what crosses the link from this side.
            let leg = self.link.map_or(LinkLeg::Server, |f| f.link.leg);
            let flag = leg.pick("--downlink", "--uplink");
            let _ = writeln!(
                out,
                "learned:     the long legs sent up to {}.{:03} Mbit/s, smallest RTT {ms} ms ({flag} {mbit}mbit --rtt {ms}ms if the link is what held them)",
                e.send_bps / 1_000_000,
                e.send_bps % 1_000_000 / 1000
            );
        }
        if c.handed_to_cubic > 0 {
            let _ = writeln!(
                out,
                "             {} long legs left BBR for cubic: the far end's receive window held them below the link's rate",
                c.handed_to_cubic
            );
        }
        if c.rtt_probes_skipped > 0 {
            let _ = writeln!(
                out,
                "             {} times a long leg's BBR started afresh instead of idling the link for its RTT probe",
                c.rtt_probes_skipped
            );
        }
        if let Some(sn) = self.snoop {
            out.push_str("snoop:       ");
            sn.write_status_json(out);
            out.push('\n');
        }
        if self.active() > 0 {
            let _ = writeln!(
                out,
                "\n{:<10} {:<46} {:<46} {:<12} {:>8} {:>12} {:>12}",
                "ID", "CLIENT", "SERVER", "STATE", "AGE", "UP", "DOWN"
            );
        }
        for (id, conn) in self.pool.active() {
            let age = Seconds(self.now.duration_since(conn.started)).split();
            let _ = writeln!(
                out,
                "{:<10x} {:<46} {:<46} {:<12} {:>5}.{}s {:>12} {:>12}",
                id.as_u32(),
                // SocketAddr pads as one string.
                conn.tuple.client,
                conn.tuple.server,
                conn.state_name(),
                age.0,
                age.1,
                conn.bytes_up(),
                conn.bytes_down()
            );
        }
    }
}
