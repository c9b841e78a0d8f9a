//! The configuration as the rest of pepwrt reads it: what to run, and
//! with which interception, pool, legs and Snoop. Built by the parser;
//! the checks that need figures from the system (memory) take them as
//! arguments.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::link::{LegOptions, Link, LinkInForce, LinkLeg, Setup};

/// A subcommand: what the options on a command line are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Run,
    Check,
    Rules,
    Status,
}

impl Subcommand {
    pub fn name(self) -> &'static str {
        match self {
            Subcommand::Run => "run",
            Subcommand::Check => "check",
            Subcommand::Rules => "rules",
            Subcommand::Status => "status",
        }
    }
}

/// What the user asked the program to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    /// With a backend, `check` also probes that it can load the rules.
    Check {
        backend: Option<Backend>,
    },
    Rules(RulesRequest),
    Status {
        json: bool,
    },
    /// The overview, or one subcommand's page.
    Help(Option<Subcommand>),
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Iptables,
}

/// Which part of the interception setup `pepwrt rules` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesPart {
    /// A shell script: firewall and routing together.
    All,
    /// nft: the bare `table inet pepwrt` ruleset (for `nft -f` or a fw4
    /// include); iptables: a shell script of iptables commands.
    Firewall,
    /// A shell script of `ip rule` / `ip route` commands.
    Routing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulesRequest {
    pub backend: Backend,
    pub delete: bool,
    pub part: RulesPart,
}

/// Where a match for interception or snooping applies: an interface name
/// or a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Interface(String),
    Subnet(IpAddr, u8),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Interface(name) => f.write_str(name),
            Target::Subnet(addr, len) => write!(f, "{addr}/{len}"),
        }
    }
}

/// Source address of the outgoing (server) leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingSource {
    /// Bind the client's own address (IP_TRANSPARENT): the server sees the client.
    Client,
    /// Let the kernel pick the router's address.
    Router,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopConfig {
    pub targets: Vec<Target>,
    pub queue: u16,
    pub flows: u16,
    pub cache_bytes: u32,
}

impl Default for SnoopConfig {
    fn default() -> Self {
        SnoopConfig {
            targets: Vec::new(),
            queue: 3136,
            flows: 64,
            cache_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub command: Command,
    pub foreground: bool,
    pub log_level: log::LevelFilter,
    pub queue: u16,
    pub port: u16,
    pub mark: u32,
    pub table: u32,
    pub max_conns: u16,
    pub buffer_bytes: u32,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub outgoing_source: OutgoingSource,
    pub client_leg: LegOptions,
    pub server_leg: LegOptions,
    pub server_fastopen: bool,
    /// The interface of a tunnel (WireGuard) whose far end runs pepwrt:
    /// the link is crossed inside it, and its routes get the link's
    /// windows.
    pub tunnel: Option<String>,
    /// Zero-round-trip opens inside the tunnel: the router's outgoing
    /// legs carry the client's first bytes in their SYN, the gateway's
    /// listener takes them without a cookie (TCP fast open).
    pub zero_rtt: bool,
    /// Which leg crosses the link (--link-leg), known even without
    /// link figures: where the zero-round-trip open is sent or taken.
    pub link_leg: LinkLeg,
    /// Initial congestion window (segments) for connections the router
    /// opens itself, set on its default routes by `pepwrt rules`.
    pub initcwnd: Option<u16>,
    /// The slow link's rates and RTT, when the user gave them.
    pub link: Option<Link>,
    pub intercept: Vec<Target>,
    pub exclude_ports: Vec<u16>,
    /// `--quic reject`: UDP to port 443 forwarded from the intercepted
    /// side is answered with ICMP port unreachable, so browsers fall back
    /// to TCP (which pepwrt splits) at once.
    pub reject_quic: bool,
    pub ipv6: bool,
    pub control_path: PathBuf,
    /// Run as this user after start-up, keeping only the capabilities
    /// the steady state needs.
    pub user: Option<String>,
    pub snoop: Option<SnoopConfig>,
    /// The link settings chose BBR for the leg over the link (the user
    /// did not name one): a leg the peer's window holds back may leave it.
    pub bbr_by_link: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command: Command::Run,
            foreground: false,
            log_level: log::LevelFilter::Info,
            queue: 3135,
            port: 3135,
            mark: 0x0001_0000,
            // busybox's ip, OpenWrt's default, takes tables up to 1023.
            table: 313,
            max_conns: 128,
            buffer_bytes: 32 * 1024,
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            outgoing_source: OutgoingSource::Client,
            client_leg: LegOptions {
                nodelay: true,
                ..LegOptions::default()
            },
            server_leg: LegOptions::default(),
            server_fastopen: false,
            tunnel: None,
            zero_rtt: false,
            link_leg: LinkLeg::Server,
            initcwnd: None,
            link: None,
            intercept: Vec::new(),
            exclude_ports: Vec::new(),
            reject_quic: false,
            ipv6: true,
            control_path: PathBuf::from("/var/run/pepwrt.sock"),
            user: None,
            snoop: None,
            bbr_by_link: false,
        }
    }
}

impl Config {
    /// What the link settings put in force, for `check` and `status`.
    pub fn link_in_force(&self) -> Option<LinkInForce> {
        let link = self.link?;
        Some(LinkInForce::new(
            link,
            self.long_leg_options()?,
            self.initcwnd,
        ))
    }

    /// What the daemon hands the link: its settings and what they put in
    /// force.
    pub fn link_setup(&self) -> Setup {
        Setup {
            link: self.link,
            long: self.long_leg_options().cloned().unwrap_or_default(),
            bbr_by_link: self.bbr_by_link,
            initcwnd: self.initcwnd,
        }
    }

    /// The options of the leg that sends over the slow link, where link
    /// settings name one.
    pub fn long_leg_options(&self) -> Option<&LegOptions> {
        Some(self.link?.leg.pick(&self.client_leg, &self.server_leg))
    }

    /// The bit the daemon sets on SYNs it has decided on (split or pass), so
    /// the queue rule does not see them again after the repeat verdict.
    pub fn decided_mark(&self) -> u32 {
        self.mark << 1
    }

    /// Both bits pepwrt owns in the packet mark.
    pub fn mark_mask(&self) -> u32 {
        self.mark | self.decided_mark()
    }

    /// Mark on Snoop's own retransmissions, so the rules can exempt them
    /// from conntrack.
    pub fn snoop_mark(&self) -> u32 {
        self.mark << 2
    }

    /// Mark of packets from a Wi-Fi station behind a bridge port that is a
    /// Snoop target (packet mark), and of their connections (conntrack
    /// mark); see `snoop::rules`.
    pub fn station_mark(&self) -> u32 {
        self.mark << 3
    }

    /// Checks between options, once all are in: each alone was valid.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.snoop.as_ref().is_some_and(|s| s.queue == self.queue) {
            return err("--snoop-queue must differ from --queue");
        }
        if (self.mark << 3) >> 3 != self.mark {
            return err("--mark: the bit and the three above it must fit in 32 bits");
        }
        let v6 = |t: &Target| matches!(t, Target::Subnet(IpAddr::V6(_), _));
        if !self.ipv6 && self.intercept.iter().any(v6) {
            return err("--intercept: an IPv6 subnet was given together with --no-ipv6");
        }
        if self.zero_rtt && self.tunnel.is_none() {
            return err("--zero-rtt needs --tunnel");
        }
        // Data in a SYN without a cookie is taken only from the tunnel:
        // the gateway is never an open proxy.
        if let Some(t) = &self.tunnel
            && self.link_leg == LinkLeg::Client
            && self.intercept != [Target::Interface(t.clone())]
        {
            return err("--tunnel at a gateway: --intercept must name the tunnel alone");
        }
        Ok(())
    }

    /// The outgoing legs open with TCP fast open: asked for, or the
    /// router's zero-round-trip opens. Whether a SYN carries data without
    /// a cookie is the route's to say (`fastopen_no_cookie`, which `pepwrt
    /// rules` sets on the tunnel's routes): only legs into the tunnel do;
    /// any other asks for a cookie, as RFC 7413 has it.
    pub fn outgoing_fast_open(&self) -> bool {
        self.server_fastopen || self.zero_rtt_routes()
    }

    /// The router's zero-round-trip opens: its tunnel's routes carry
    /// `fastopen_no_cookie`.
    pub fn zero_rtt_routes(&self) -> bool {
        self.zero_rtt && self.link_leg == LinkLeg::Server
    }

    /// The listener takes data in a SYN without a cookie: a gateway whose
    /// far end opens with zero round trips.
    pub fn listener_fast_open(&self) -> bool {
        self.zero_rtt && self.link_leg == LinkLeg::Client
    }

    /// Memory the relay may hold, at most: a buffer per direction of
    /// every connection (in pipes lent from a pool made at start, kernel
    /// memory; fewer pipes than directions hold less), and Snoop's segment
    /// cache.
    pub fn buffer_memory_bytes(&self) -> u64 {
        let relay = 2 * u64::from(self.max_conns) * u64::from(self.buffer_bytes);
        relay + self.snoop.as_ref().map_or(0, |s| u64::from(s.cache_bytes))
    }

    /// Refuses buffers that do not fit in `available_bytes` (the kernel's
    /// MemAvailable, read by the caller): filled, they would wake the OOM
    /// killer on a small router.
    pub fn check_memory(&self, available_bytes: u64) -> Result<(), ConfigError> {
        let need = self.buffer_memory_bytes();
        if need <= available_bytes {
            return Ok(());
        }
        err(format!(
            "{}; lower --max-conns (at most {} fit with this --buffer) or --buffer",
            self.memory_figures(available_bytes),
            self.conns_that_fit(available_bytes),
        ))
    }

    /// A warning when the buffers would take more than half of the memory
    /// available: they fit, but leave little to the rest of the router.
    pub fn memory_warning(&self, available_bytes: u64) -> Option<String> {
        let need = self.buffer_memory_bytes();
        (need > available_bytes / 2 && need <= available_bytes).then(|| {
            format!(
                "{}: more than half, little is left for the rest of the system",
                self.memory_figures(available_bytes)
            )
        })
    }

    fn memory_figures(&self, available_bytes: u64) -> String {
        let snoop = match &self.snoop {
            Some(s) => format!(
                " + Snoop's cache of {}",
                human_bytes(u64::from(s.cache_bytes))
            ),
            None => String::new(),
        };
        format!(
            "the buffers need {} (--max-conns {} x 2 x --buffer {}{snoop}) of the {} of memory available",
            human_bytes(self.buffer_memory_bytes()),
            self.max_conns,
            human_bytes(u64::from(self.buffer_bytes)),
            human_bytes(available_bytes),
        )
    }

    fn conns_that_fit(&self, available_bytes: u64) -> u64 {
        let snoop = self.snoop.as_ref().map_or(0, |s| u64::from(s.cache_bytes));
        available_bytes.saturating_sub(snoop) / (2 * u64::from(self.buffer_bytes))
    }
}

/// Bytes in the largest binary unit that keeps at least two digits:
/// integers only, as float formatting would grow the binary.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u32); 3] = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if bytes >> shift >= 10 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// A command line pepwrt refuses, with the help page that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub message: String,
    /// The subcommand whose help page to point at; `None`: the overview.
    pub topic: Option<Subcommand>,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            topic: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.topic {
            Some(sub) => write!(f, "{} (see 'pepwrt {} --help')", self.message, sub.name()),
            None => write!(f, "{} (see 'pepwrt --help')", self.message),
        }
    }
}

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_that_do_not_fit_are_refused_with_the_figures() {
        let cfg = Config {
            max_conns: 65000,
            buffer_bytes: 1 << 20,
            ..Config::default()
        };
        let e = cfg.check_memory(64 << 20).unwrap_err().to_string();
        assert!(e.contains("the buffers need 126 GiB"), "{e}");
        assert!(
            e.contains("--max-conns 65000 x 2 x --buffer 1024 KiB"),
            "{e}"
        );
        assert!(e.contains("of the 64 MiB of memory available"), "{e}");
        assert!(e.contains("at most 32 fit"), "{e}");
        // The default pool (8 MiB) fits a small router's 30 MiB.
        assert_eq!(Config::default().check_memory(30 << 20), Ok(()));
        assert_eq!(Config::default().memory_warning(30 << 20), None);
    }

    #[test]
    fn buffers_over_half_of_the_memory_are_a_warning() {
        let cfg = Config {
            snoop: Some(SnoopConfig::default()),
            ..Config::default()
        };
        // 8 MiB of relay buffers and 1 MiB of Snoop cache.
        assert_eq!(cfg.buffer_memory_bytes(), 9 << 20);
        assert!(cfg.check_memory(12 << 20).is_ok());
        let w = cfg.memory_warning(12 << 20).unwrap();
        assert!(w.contains("Snoop's cache of 1024 KiB"), "{w}");
        assert!(cfg.check_memory(8 << 20).is_err());
    }

    #[test]
    fn sizes_are_shown_in_whole_units() {
        assert_eq!(human_bytes(9), "9 bytes");
        assert_eq!(human_bytes(32 << 10), "32 KiB");
        assert_eq!(human_bytes(9 << 20), "9216 KiB");
        assert_eq!(human_bytes(3 << 30), "3072 MiB");
        assert_eq!(human_bytes(127 << 30), "127 GiB");
    }
}
