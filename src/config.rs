//! Command line: the one place where flags are named, parsed and validated.
//!
//! Every subcommand shares the daemon's flags, so `pepwrt rules` prints the
//! firewall setup for exactly the configuration the daemon runs with.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the user asked the program to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    Check,
    Rules(RulesRequest),
    Status { json: bool },
    Help,
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

/// Source address of the outgoing (server) leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingSource {
    /// Bind the client's own address (IP_TRANSPARENT): the server sees the client.
    Client,
    /// Let the kernel pick the router's address.
    Router,
}

/// Socket options for one leg of a split connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegOptions {
    pub congestion: Option<String>,
    pub nodelay: bool,
    pub quickack: bool,
    pub sndbuf_bytes: Option<u32>,
    pub rcvbuf_bytes: Option<u32>,
    pub mss: Option<u16>,
    /// SO_MAX_PACING_RATE in bytes per second: set from the link's rate
    /// on the leg that sends over the long link.
    pub pacing_bytes_per_s: Option<u64>,
}

/// Which leg of a split connection crosses the long link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLeg {
    /// pepwrt in the router on the user's side of the link: the outgoing
    /// leg sends uploads over it.
    Server,
    /// pepwrt at the far end (a gateway): the intercepted leg sends
    /// downloads over it.
    Client,
}

/// The slow link's figures as the user knows them (like SQM's settings),
/// named from the user's side: uplink is what the user sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub uplink_bps: Option<u64>,
    pub downlink_bps: Option<u64>,
    pub rtt: Duration,
    pub leg: LinkLeg,
}

/// The most send buffer autotuning gives a socket (tcp_wmem's third
/// field), if this system tells.
fn autotuning_ceiling() -> Option<u64> {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").ok()?;
    wmem.split_whitespace().nth(2)?.parse().ok()
}

/// Link settings with at least this RTT choose BBR for the long leg.
const BBR_MIN_RTT: Duration = Duration::from_millis(200);

/// Segment size the window figures assume: a 1500-byte MTU with TCP
/// timestamps.
const LINK_MSS: u64 = 1448;

impl Link {
    /// The rate pepwrt sends at over the link, and the rate it receives.
    pub fn send_bps(&self) -> Option<u64> {
        match self.leg {
            LinkLeg::Server => self.uplink_bps,
            LinkLeg::Client => self.downlink_bps,
        }
    }

    pub fn receive_bps(&self) -> Option<u64> {
        match self.leg {
            LinkLeg::Server => self.downlink_bps,
            LinkLeg::Client => self.uplink_bps,
        }
    }

    /// A link long enough for BBR, and paced at exactly its rate.
    pub fn is_long(&self) -> bool {
        self.rtt >= BBR_MIN_RTT
    }

    /// Bandwidth-delay product in bytes.
    pub fn bdp_bytes(&self, bps: u64) -> u64 {
        let bits = u128::from(bps) * self.rtt.as_micros() / 1_000_000;
        (bits / 8).min(u128::from(u64::MAX)) as u64
    }

    /// The BDP in full-sized segments, for a route's initial window: the
    /// long leg's first flight fills the link instead of probing from 10.
    pub fn window_segments(&self, bps: Option<u64>) -> Option<u32> {
        let bdp = self.bdp_bytes(bps?);
        Some(bdp.div_ceil(LINK_MSS).clamp(10, 65535) as u32)
    }

    /// Initial congestion window of the legs that send over the link.
    pub fn initcwnd(&self) -> Option<u32> {
        self.window_segments(self.send_bps())
    }

    /// Initial receive window of those legs' routes.
    pub fn initrwnd(&self) -> Option<u32> {
        self.window_segments(self.receive_bps())
    }

    /// The long leg's options: paced at the link's rate, and a send
    /// buffer of two BDPs (one in flight, one to refill it while the
    /// first is acknowledged) unless the user set one.
    fn apply(&self, cfg: &mut Config) {
        let leg = match self.leg {
            LinkLeg::Server => &mut cfg.server_leg,
            LinkLeg::Client => &mut cfg.client_leg,
        };
        // BBR holds the link's rate through random loss (a 1 % loss GEO
        // link: 3.3x direct, cubic 2.6x) and also wins on a clean one, but
        // BBR (v1) caps its window at twice the smallest RTT it has seen:
        // where the RTT steps up, as at LEO handovers (40 to 100 ms), that
        // cap cuts its rate for seconds (LEO uploads 0.8x direct). So BBR
        // on long links, the kernel's default (cubic) on short ones,
        // unless the user chose.
        if leg.congestion.is_none() && self.is_long() {
            leg.congestion = Some("bbr".to_string());
            cfg.bbr_by_link = true;
        }
        if let Some(bps) = self.send_bps() {
            // The cap is the link's rate on long links; short ones get a
            // quarter more: after an outage or an RTT step (LEO handovers)
            // a leg capped at exactly the link's rate cannot catch up
            // (measured: LEO 1 MB uploads 0.74x direct at 1.0x, 1.0x at
            // 1.25x; on a clean GEO link 1.25x cost 3 %).
            let rate = bps / 8;
            let headroom = if self.is_long() { 0 } else { rate / 4 };
            leg.pacing_bytes_per_s = Some(rate + headroom);
            // Send buffer autotuning starts at two initial windows and
            // follows the RTT when it grows (queues, LEO handovers); a
            // fixed buffer would not. So it is fixed only where
            // autotuning's ceiling (tcp_wmem) cannot reach two BDPs.
            let two_bdp = self.two_bdp(bps);
            if autotuning_ceiling().is_some_and(|max| max < u64::from(two_bdp)) {
                leg.sndbuf_bytes.get_or_insert(two_bdp);
            }
        }
        // The receive buffer stays with autotuning. A fixed one of two
        // BDPs of the other direction lets the route's initrwnd act (the
        // kernel's 128 KB start holds the window back for several round
        // trips): with pepwrt at the far end too, which sends a BDP at
        // once, downloads then reach the link's limit (geo-clean: 1 MB
        // 3.52 -> 2.04 s, 10 MB 11.06 -> 9.57 s). But from a plain server
        // that window let its slow start overshoot the link's queue
        // (geo-clean 10 MB downloads 13.25 s against 12.42 s direct), so
        // it is for two-ended setups to ask for (--server-rcvbuf on the
        // router, --client-rcvbuf on the gateway).
    }

    /// Two BDPs in bytes, within what a socket buffer can take.
    fn two_bdp(&self, bps: u64) -> u32 {
        (2 * self.bdp_bytes(bps)).clamp(64 * 1024, 1 << 30) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopConfig {
    pub targets: Vec<Target>,
    pub queue: u16,
    pub flows: u16,
    pub cache_bytes: u32,
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
    /// Initial congestion window (segments) for connections the router
    /// opens itself, set on its default routes by `pepwrt rules`.
    pub initcwnd: Option<u16>,
    /// The slow link's rates and RTT, when the user gave them.
    pub link: Option<Link>,
    pub intercept: Vec<Target>,
    pub exclude_ports: Vec<u16>,
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
            initcwnd: None,
            link: None,
            intercept: Vec::new(),
            exclude_ports: Vec::new(),
            ipv6: true,
            control_path: PathBuf::from("/var/run/pepwrt.sock"),
            user: None,
            snoop: None,
            bbr_by_link: false,
        }
    }
}

/// What the link settings put in force, for `pepwrt status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInForce {
    pub link: Link,
    /// The long leg's send pacing and buffers.
    pub pacing_bytes_per_s: Option<u64>,
    pub sndbuf_bytes: Option<u32>,
    pub rcvbuf_bytes: Option<u32>,
    /// The initial window `pepwrt rules` gives the long legs' routes.
    pub route_initcwnd: Option<u32>,
}

impl Config {
    pub fn link_in_force(&self) -> Option<LinkInForce> {
        let link = self.link?;
        let leg = self.long_leg_options()?;
        Some(LinkInForce {
            link,
            pacing_bytes_per_s: leg.pacing_bytes_per_s,
            sndbuf_bytes: leg.sndbuf_bytes,
            rcvbuf_bytes: leg.rcvbuf_bytes,
            route_initcwnd: self.initcwnd.map(u32::from).or(link.initcwnd()),
        })
    }

    /// The options of the leg that sends over the slow link, where link
    /// settings name one.
    pub fn long_leg_options(&self) -> Option<&LegOptions> {
        Some(match self.link?.leg {
            LinkLeg::Server => &self.server_leg,
            LinkLeg::Client => &self.client_leg,
        })
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see 'pepwrt --help')", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

pub const HELP: &str = "\
pepwrt - transparent split-TCP performance enhancing proxy for routers

USAGE:
    pepwrt [run] [OPTIONS]          run the proxy (default)
    pepwrt check [OPTIONS]          check that the kernel has what pepwrt needs
    pepwrt rules [RULES-OPTIONS] [OPTIONS]
                                    print the firewall and routing setup
    pepwrt status [--json] [--control PATH]
                                    show counters and live connections
    pepwrt --help | --version

Connections that cross the router are intercepted when their first SYN
reaches NFQUEUE --queue. If a pool slot is free the SYN gets the split mark
and TPROXY delivers it to pepwrt's transparent listener on --port; pepwrt
then opens its own connection to the real destination and relays bytes
between the two. If the pool is full, or policy excludes the connection,
the SYN passes untouched and the connection is forwarded as usual. With
queue bypass in the rules, traffic flows unsplit while pepwrt is stopped.

GENERAL OPTIONS:
    -f, --foreground         log to stderr instead of syslog (daemon facility)
    --log-level LEVEL        error, warn, info or debug [default: info]
    --control PATH           status socket [default: /var/run/pepwrt.sock]
    --user NAME              once set up, run as this user (e.g. nobody)
                             with only CAP_NET_ADMIN and CAP_NET_RAW

INTERCEPTION:
    --queue NUM              NFQUEUE number for SYNs [default: 3135]
    --port PORT              transparent listener port [default: 3135]
    --mark BIT               packet mark bit for split SYNs; the next bit up
                             marks decided SYNs and the one above it Snoop's
                             retransmissions [default: 0x10000]
    --table NUM              routing table for marked packets [default: 313]
    --intercept IF|CIDR      intercept SYNs arriving on this interface or
                             from this subnet; repeatable [default: all].
                             On a router name the LAN side (e.g. br-lan):
                             connections coming in from the WAN would
                             otherwise be split too, and then meet the
                             router's input firewall instead of its
                             forwarding rules
    --exclude-port PORT      never split connections to this port; repeatable
    --no-ipv6                IPv4 only

POOL:
    --max-conns N            split connections at once, 1-65000 [default: 128]
    --buffer BYTES           relay buffer per direction per connection,
                             4096-16777216, suffixes k and m [default: 32k]
    --idle-timeout SECS      close connections idle this long [default: 600]
    --connect-timeout SECS   give up on the outgoing connect [default: 10]
    Memory for buffers is max-conns * 2 * buffer, allocated at start.

OUTGOING LEG (router to server):
    --outgoing-source client|router
                             source address of the outgoing leg: the client's
                             own address (transparent, the default) or the
                             router's
    --server-cc NAME         congestion control, e.g. bbr or cubic
    --server-nodelay         set TCP_NODELAY
    --server-quickack        set TCP_QUICKACK
    --server-sndbuf BYTES    SO_SNDBUF (large windows on long links)
    --server-rcvbuf BYTES    SO_RCVBUF
    --server-mss BYTES       MSS [default: the client's SYN MSS]
    --server-fastopen        TCP fast open on the outgoing connect
    --initcwnd SEGMENTS      initial congestion and receive windows of the
                             connections the router opens itself (pepwrt's
                             outgoing legs), set on the default routes by
                             `pepwrt rules` (Linux starts at 10 segments;
                             a long link fills faster from 32-64); the
                             other traffic the router forwards is unchanged.
                             At a gateway, where the long link is the
                             client leg, set it on the routes back over
                             the link instead (ip route change ROUTE
                             initcwnd N initrwnd N)

LINK (the slow link's figures, like SQM's; optional):
    --uplink RATE            the link's rate from this side to the far side
    --downlink RATE          its rate toward this side; RATE is
                             bits per second with a unit: 850kbit,
                             10mbit, 1gbit
    --rtt DURATION           the link's round-trip time when idle, e.g.
                             600ms (GEO), 40ms (LEO), 0.1s
    --link-leg server|client which leg crosses the link [default: server].
                             server: pepwrt in the router on the users'
                             side; uploads leave over the link at the
                             uplink rate. client: pepwrt at the far end
                             of the link (a gateway, two-ended setup);
                             downloads leave over the link at the
                             downlink rate. Give both ends the same
                             --uplink and --downlink.
    With link settings the leg that sends over the link is paced at the
    link's rate (SO_MAX_PACING_RATE; under 200 ms RTT a lone leg gets a
    quarter above it; legs sending at the same time share the link's
    rate, worked out again once an RTT). With an RTT of 200 ms
    or more it uses bbr (unless --*-cc is given; below that the kernel's
    default, cubic, which follows RTT steps such as LEO handovers
    better), and a leg whose far end's receive window stays under half
    the BDP (bandwidth-delay product = rate x rtt) after a few seconds
    of sending goes over to cubic: bbr's probing costs there and gains
    nothing. A leg that keeps bbr gets a fresh bbr every 7 s: bbr's RTT
    probe, due every 10 s, would idle the link for about a second at
    GEO RTTs, and a leg paced at the link's rate builds no queue for it
    to drain. The send buffer is left to autotuning unless its ceiling
    (tcp_wmem) is under 2 x BDP; then it is 2 x BDP (unless --*-sndbuf
    is given). Two-ended (pepwrt at both ends) on a link of 200 ms or
    more: give the router --server-rcvbuf of 2 x downlink BDP and the
    gateway --client-rcvbuf of 2 x uplink BDP, so the window each offers
    the other starts at about one BDP (on shorter links leave them to
    autotuning: a fixed buffer cannot follow RTT steps). `pepwrt rules`
    sets the routes it uses to an initial window of one BDP (initcwnd,
    in 1448-byte segments; initrwnd from the other direction), so a
    transfer starts at the link's rate instead of probing up from 10
    segments. server: the default routes (an explicit --initcwnd wins);
    client: the routes via the --intercept interfaces.

CLIENT LEG (client to router):
    --client-cc NAME, --client-nodelay (on by default; --client-delay turns it
    off), --client-quickack, --client-sndbuf BYTES, --client-rcvbuf BYTES,
    --client-mss BYTES       as above, for the intercepted connection

SNOOP (local recovery toward lossy wireless hosts):
    --snoop IF|CIDR          snoop forwarded TCP toward this interface or
                             subnet; repeatable; enables Snoop
    --snoop-queue NUM        NFQUEUE number for snooped packets [default: 3136]
    --snoop-flows N          flows tracked at once [default: 64]
    --snoop-cache BYTES      segment cache, suffixes k and m [default: 1m]

RULES OPTIONS:
    --backend nft|iptables   rule flavour [default: nft]
    --delete                 print the commands that remove the setup instead
    --part all|firewall|routing
                             all: one shell script [default]; firewall: nft's
                             bare ruleset (for nft -f or a fw4 include) or the
                             iptables commands; routing: the ip rule/route
                             commands

STATUS OPTIONS:
    --json                   machine-readable output

EXIT STATUS:
    0 success, 1 runtime failure, 2 bad command line, 3 missing kernel support
";

/// Parses a command line (without the program name).
pub fn parse<I>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut cli = Cli::default();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return err(e.to_string()),
        };
        match arg {
            lexopt::Arg::Short(c) => cli.short(c)?,
            lexopt::Arg::Long(name) => {
                // Owned, so the parser can be asked for the flag's value.
                let name = name.to_string();
                let mut value = FlagValue {
                    parser: &mut parser,
                    flag: format!("--{name}"),
                };
                cli.long(&name, &mut value)?
            }
            lexopt::Arg::Value(v) => cli.word(v)?,
        }
    }
    cli.finish()
}

/// The value that follows a flag, fetched on demand (switches have none).
struct FlagValue<'a> {
    parser: &'a mut lexopt::Parser,
    flag: String,
}

impl FlagValue<'_> {
    fn get(&mut self) -> Result<String, ConfigError> {
        match self.parser.value() {
            Ok(v) => v
                .into_string()
                .or_else(|_| err(format!("{}: value is not valid UTF-8", self.flag))),
            Err(_) => err(format!("{} needs a value", self.flag)),
        }
    }
}

/// Everything the command line sets, before the pieces that depend on
/// each other are checked and combined by `finish`.
struct Cli {
    cfg: Config,
    command: Option<&'static str>,
    rules: RulesRequest,
    json: bool,
    snoop: SnoopConfig,
    link: LinkArgs,
    help: bool,
    version: bool,
}

/// Takes a long flag if it belongs to its group (true), else leaves it.
type OptionGroup = fn(&mut Cli, &str, &mut FlagValue) -> Result<bool, ConfigError>;

/// Link figures as given; `finish` turns them into `Link`.
#[derive(Default)]
struct LinkArgs {
    uplink_bps: Option<u64>,
    downlink_bps: Option<u64>,
    rtt: Option<Duration>,
    leg: Option<LinkLeg>,
}

impl Default for Cli {
    fn default() -> Self {
        Cli {
            cfg: Config::default(),
            command: None,
            rules: RulesRequest {
                backend: Backend::Nft,
                delete: false,
                part: RulesPart::All,
            },
            json: false,
            snoop: SnoopConfig {
                targets: Vec::new(),
                queue: 3136,
                flows: 64,
                cache_bytes: 1024 * 1024,
            },
            link: LinkArgs::default(),
            help: false,
            version: false,
        }
    }
}

impl Cli {
    fn short(&mut self, c: char) -> Result<(), ConfigError> {
        match c {
            'h' => self.help = true,
            'V' => self.version = true,
            'f' => self.cfg.foreground = true,
            _ => return err(format!("unknown option -{c}")),
        }
        Ok(())
    }

    /// A command word: the first one names the subcommand.
    fn word(&mut self, v: OsString) -> Result<(), ConfigError> {
        if self.command.is_some() {
            return err(format!("unexpected argument '{}'", v.to_string_lossy()));
        }
        self.command = Some(match v.to_str() {
            Some("run") => "run",
            Some("check") => "check",
            Some("rules") => "rules",
            Some("status") => "status",
            _ => return err(format!("unknown command '{}'", v.to_string_lossy())),
        });
        Ok(())
    }

    /// One long flag, offered to each group of options in turn.
    fn long(&mut self, name: &str, value: &mut FlagValue) -> Result<(), ConfigError> {
        let groups: [OptionGroup; 6] = [
            Cli::general,
            Cli::interception,
            Cli::pool,
            Cli::leg_option,
            Cli::link_option,
            Cli::snoop_or_subcommand,
        ];
        for group in groups {
            if group(self, name, value)? {
                return Ok(());
            }
        }
        err(format!("unknown option --{name}"))
    }

    fn general(&mut self, name: &str, value: &mut FlagValue) -> Result<bool, ConfigError> {
        let cfg = &mut self.cfg;
        match name {
            "help" => self.help = true,
            "version" => self.version = true,
            "foreground" => cfg.foreground = true,
            "log-level" => cfg.log_level = parse_level(&value.get()?)?,
            "control" => cfg.control_path = PathBuf::from(value.get()?),
            "user" => cfg.user = Some(value.get()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn interception(&mut self, name: &str, value: &mut FlagValue) -> Result<bool, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "queue" => cfg.queue = parse_num(&flag, &value.get()?, 0, 65535)? as u16,
            "port" => cfg.port = parse_num(&flag, &value.get()?, 1, 65535)? as u16,
            "mark" => cfg.mark = parse_mark(&value.get()?)?,
            "table" => cfg.table = parse_table(&value.get()?)?,
            "intercept" => cfg.intercept.push(parse_target(&flag, &value.get()?)?),
            "exclude-port" => cfg
                .exclude_ports
                .push(parse_num(&flag, &value.get()?, 1, 65535)? as u16),
            "no-ipv6" => cfg.ipv6 = false,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn pool(&mut self, name: &str, value: &mut FlagValue) -> Result<bool, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "max-conns" => cfg.max_conns = parse_num(&flag, &value.get()?, 1, 65000)? as u16,
            "buffer" => cfg.buffer_bytes = parse_size(&flag, &value.get()?, 4096, 16 << 20)?,
            "idle-timeout" => cfg.idle_timeout = parse_secs(&flag, &value.get()?)?,
            "connect-timeout" => cfg.connect_timeout = parse_secs(&flag, &value.get()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `--server-*` and `--client-*`, and the outgoing leg's own flags.
    fn leg_option(&mut self, name: &str, value: &mut FlagValue) -> Result<bool, ConfigError> {
        let cfg = &mut self.cfg;
        let flag = format!("--{name}");
        match name {
            "outgoing-source" => {
                cfg.outgoing_source = match value.get()?.as_str() {
                    "client" => OutgoingSource::Client,
                    "router" => OutgoingSource::Router,
                    other => {
                        return err(format!(
                            "--outgoing-source: '{other}' is not client or router"
                        ));
                    }
                };
                return Ok(true);
            }
            "server-fastopen" => {
                cfg.server_fastopen = true;
                return Ok(true);
            }
            "initcwnd" => {
                cfg.initcwnd = Some(parse_num(&flag, &value.get()?, 1, 1024)? as u16);
                return Ok(true);
            }
            "client-delay" => {
                cfg.client_leg.nodelay = false;
                return Ok(true);
            }
            _ => {}
        }
        let (leg, opt) = if let Some(opt) = name.strip_prefix("server-") {
            (&mut cfg.server_leg, opt)
        } else if let Some(opt) = name.strip_prefix("client-") {
            (&mut cfg.client_leg, opt)
        } else {
            return Ok(false);
        };
        match opt {
            "cc" => leg.congestion = Some(parse_cc(&flag, &value.get()?)?),
            "nodelay" => leg.nodelay = true,
            "quickack" => leg.quickack = true,
            "sndbuf" => leg.sndbuf_bytes = Some(parse_size(&flag, &value.get()?, 4096, 1 << 30)?),
            "rcvbuf" => leg.rcvbuf_bytes = Some(parse_size(&flag, &value.get()?, 4096, 1 << 30)?),
            "mss" => leg.mss = Some(parse_num(&flag, &value.get()?, 88, 32767)? as u16),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn link_option(&mut self, name: &str, value: &mut FlagValue) -> Result<bool, ConfigError> {
        let link = &mut self.link;
        let flag = format!("--{name}");
        match name {
            "uplink" => link.uplink_bps = Some(parse_rate(&flag, &value.get()?)?),
            "downlink" => link.downlink_bps = Some(parse_rate(&flag, &value.get()?)?),
            "rtt" => link.rtt = Some(parse_duration(&flag, &value.get()?)?),
            "link-leg" => {
                link.leg = Some(match value.get()?.as_str() {
                    "server" => LinkLeg::Server,
                    "client" => LinkLeg::Client,
                    other => return err(format!("--link-leg: '{other}' is not server or client")),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn snoop_or_subcommand(
        &mut self,
        name: &str,
        value: &mut FlagValue,
    ) -> Result<bool, ConfigError> {
        let snoop = &mut self.snoop;
        let flag = format!("--{name}");
        match name {
            "snoop" => snoop.targets.push(parse_target(&flag, &value.get()?)?),
            "snoop-queue" => snoop.queue = parse_num(&flag, &value.get()?, 0, 65535)? as u16,
            "snoop-flows" => snoop.flows = parse_num(&flag, &value.get()?, 1, 4096)? as u16,
            "snoop-cache" => {
                snoop.cache_bytes = parse_size(&flag, &value.get()?, 16 * 1024, 64 << 20)?
            }
            "backend" => {
                self.rules.backend = match value.get()?.as_str() {
                    "nft" | "nftables" => Backend::Nft,
                    "iptables" | "xt" => Backend::Iptables,
                    other => return err(format!("--backend: '{other}' is not nft or iptables")),
                }
            }
            "delete" => self.rules.delete = true,
            "part" => {
                self.rules.part = match value.get()?.as_str() {
                    "all" => RulesPart::All,
                    "firewall" => RulesPart::Firewall,
                    "routing" => RulesPart::Routing,
                    other => {
                        return err(format!("--part: '{other}' is not all, firewall or routing"));
                    }
                }
            }
            "json" => self.json = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks what depends on several flags and builds the configuration.
    fn finish(self) -> Result<Config, ConfigError> {
        let Cli {
            mut cfg,
            command,
            rules,
            json,
            snoop,
            link,
            help,
            version,
        } = self;
        if !snoop.targets.is_empty() {
            cfg.snoop = Some(snoop);
        }
        if cfg.snoop.as_ref().is_some_and(|s| s.queue == cfg.queue) {
            return err("--snoop-queue must differ from --queue");
        }
        if (cfg.mark << 2) >> 2 != cfg.mark {
            return err("--mark: the bit and the two above it must fit in 32 bits");
        }
        if !cfg.ipv6 {
            let v6 = |t: &Target| matches!(t, Target::Subnet(IpAddr::V6(_), _));
            if cfg.intercept.iter().any(v6) {
                return err("--intercept: an IPv6 subnet was given together with --no-ipv6");
            }
        }
        cfg.link = link.finish()?;
        if let Some(link) = cfg.link {
            link.apply(&mut cfg);
        }
        cfg.command = if help {
            Command::Help
        } else if version {
            Command::Version
        } else {
            match command.unwrap_or("run") {
                "check" => Command::Check,
                "rules" => Command::Rules(rules),
                "status" => Command::Status { json },
                _ => Command::Run,
            }
        };
        Ok(cfg)
    }
}

impl LinkArgs {
    fn finish(self) -> Result<Option<Link>, ConfigError> {
        let rates = self.uplink_bps.is_some() || self.downlink_bps.is_some();
        match (rates, self.rtt) {
            // --link-leg alone changes nothing: UCI may always pass it.
            (false, None) => Ok(None),
            (false, Some(_)) => err("--rtt needs --uplink or --downlink (the link's rates)"),
            (true, None) => err(
                "--uplink/--downlink need --rtt (the link's round-trip time, e.g. 600ms) to size the window",
            ),
            (true, Some(rtt)) => Ok(Some(Link {
                uplink_bps: self.uplink_bps,
                downlink_bps: self.downlink_bps,
                rtt,
                leg: self.leg.unwrap_or(LinkLeg::Server),
            })),
        }
    }
}

fn parse_level(s: &str) -> Result<log::LevelFilter, ConfigError> {
    match s {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => err(format!(
            "--log-level: '{s}' is not error, warn, info or debug"
        )),
    }
}

fn parse_num(flag: &str, s: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = if let Some(hex) = s.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse::<u64>()
    };
    match n {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => err(format!("{flag}: {s} is out of range {min}-{max}")),
        Err(_) => err(format!("{flag}: '{s}' is not a number")),
    }
}

/// Sizes accept a k or m suffix (powers of 1024), as UCI users write them.
fn parse_size(flag: &str, s: &str, min: u64, max: u64) -> Result<u32, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1024),
        Some(b'm') => (&lower[..lower.len() - 1], 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    let n = match digits.parse::<u64>() {
        Ok(n) => n.saturating_mul(unit),
        Err(_) => return err(format!("{flag}: '{s}' is not a size (e.g. 65536, 64k, 1m)")),
    };
    if !(min..=max).contains(&n) {
        return err(format!("{flag}: {s} is out of range {min}-{max} bytes"));
    }
    Ok(n as u32)
}

/// A rate as SQM and tc write it: 850kbit, 10mbit, 1.5gbit (powers of
/// 1000, bits per second).
pub fn parse_rate(flag: &str, s: &str) -> Result<u64, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let units = [
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ];
    let Some((digits, scale)) = units
        .iter()
        .find_map(|(u, scale)| lower.strip_suffix(u).map(|d| (d, *scale)))
    else {
        let hint = if lower.ends_with("bps") {
            " (tc's bps means bytes per second; write bits, e.g. 80mbit for 10mbps)"
        } else {
            ""
        };
        return err(format!(
            "{flag}: '{s}' needs a unit: bit, kbit, mbit or gbit, e.g. 10mbit{hint}"
        ));
    };
    let Some(bps) = parse_decimal(digits, scale) else {
        return err(format!(
            "{flag}: '{s}' is not a rate like 10mbit or 850kbit"
        ));
    };
    if !(8_000..=100_000_000_000).contains(&bps) {
        return err(format!("{flag}: {s} is out of range 8kbit-100gbit"));
    }
    Ok(bps)
}

/// A duration with its unit: 600ms, 0.6s, 800us.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let units = [("ms", 1_000), ("us", 1), ("s", 1_000_000)];
    let Some((digits, scale)) = units
        .iter()
        .find_map(|(u, scale)| lower.strip_suffix(u).map(|d| (d, *scale)))
    else {
        return err(format!(
            "{flag}: '{s}' needs a unit: ms or s, e.g. 600ms or 0.6s"
        ));
    };
    let Some(us) = parse_decimal(digits, scale) else {
        return err(format!("{flag}: '{s}' is not a duration like 600ms"));
    };
    if !(1_000..=10_000_000).contains(&us) {
        return err(format!("{flag}: {s} is out of range 1ms-10s"));
    }
    Ok(Duration::from_micros(us))
}

/// `digits` (like 2.5) times `scale`, rounded; no floating point, which
/// would pull the float parser into a router binary that has a size
/// budget.
fn parse_decimal(digits: &str, scale: u64) -> Option<u64> {
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || frac.len() > 9 {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_scale = 10u64.pow(frac.len() as u32);
    let whole = int.checked_mul(scale)?;
    let part = (u128::from(frac_value) * u128::from(scale) + u128::from(frac_scale) / 2)
        / u128::from(frac_scale);
    whole.checked_add(part as u64)
}

fn parse_secs(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parse_num(flag, s, 1, 86400)?))
}

/// Routing tables 253-255 (default, main, local) are the kernel's own: the
/// rules flush pepwrt's table, which must never be one of them.
fn parse_table(s: &str) -> Result<u32, ConfigError> {
    let t = parse_num("--table", s, 1, 0xffff_fffe)? as u32;
    if (253..=255).contains(&t) {
        return err(format!(
            "--table: {t} is a table the kernel uses itself; choose another, e.g. 313"
        ));
    }
    Ok(t)
}

fn parse_mark(s: &str) -> Result<u32, ConfigError> {
    let m = parse_num("--mark", s, 1, 0xffff_ffff)? as u32;
    if !m.is_power_of_two() {
        return err(format!("--mark: {s} must be a single bit, e.g. 0x10000"));
    }
    Ok(m)
}

fn parse_cc(flag: &str, s: &str) -> Result<String, ConfigError> {
    // TCP_CONGESTION names are at most 16 bytes including the NUL.
    let ok =
        !s.is_empty() && s.len() < 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return err(format!("{flag}: '{s}' is not a congestion control name"));
    }
    Ok(s.to_string())
}

/// An interface name or a CIDR subnet.
pub fn parse_target(flag: &str, s: &str) -> Result<Target, ConfigError> {
    if let Some((addr, len)) = s.split_once('/') {
        let addr: IpAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => return err(format!("{flag}: '{s}' is not a subnet like 198.18.0.0/24")),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = parse_num(flag, len, 0, max)? as u8;
        return Ok(Target::Subnet(addr, len));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(Target::Subnet(addr, if addr.is_ipv4() { 32 } else { 128 }));
    }
    // IFNAMSIZ is 16 including the NUL; these characters are what Linux
    // and OpenWrt interface names use, and what is safe in a rule.
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return err(format!(
            "{flag}: '{s}' is neither an interface name nor a subnet"
        ));
    }
    Ok(Target::Interface(s.to_string()))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Interface(name) => f.write_str(name),
            Target::Subnet(addr, len) => write!(f, "{addr}/{len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Config, ConfigError> {
        parse(args.iter().copied())
    }

    #[test]
    fn defaults_run_the_daemon() {
        let c = p(&[]).unwrap();
        assert_eq!(c.command, Command::Run);
        assert_eq!(c.max_conns, 128);
        assert_eq!(c.buffer_bytes, 32768);
        assert_eq!(c.decided_mark(), 0x20000);
    }

    #[test]
    fn leg_options_go_to_their_leg() {
        let c = p(&[
            "--server-cc",
            "bbr",
            "--server-sndbuf",
            "4m",
            "--client-quickack",
            "--server-mss",
            "1400",
        ])
        .unwrap();
        assert_eq!(c.server_leg.congestion.as_deref(), Some("bbr"));
        assert_eq!(c.server_leg.sndbuf_bytes, Some(4 << 20));
        assert_eq!(c.server_leg.mss, Some(1400));
        assert!(c.client_leg.quickack);
        assert!(!c.server_leg.quickack);
    }

    #[test]
    fn rules_subcommand_takes_backend_and_part() {
        let c = p(&[
            "rules",
            "--backend",
            "iptables",
            "--delete",
            "--part",
            "routing",
        ])
        .unwrap();
        assert_eq!(
            c.command,
            Command::Rules(RulesRequest {
                backend: Backend::Iptables,
                delete: true,
                part: RulesPart::Routing
            })
        );
    }

    #[test]
    fn targets_are_interfaces_or_subnets() {
        assert_eq!(
            parse_target("x", "br-lan").unwrap(),
            Target::Interface("br-lan".into())
        );
        assert_eq!(
            parse_target("x", "198.18.0.0/24").unwrap(),
            Target::Subnet("198.18.0.0".parse().unwrap(), 24)
        );
        assert!(parse_target("x", "fd00::/129").is_err());
        assert!(parse_target("x", "eth0; rm -rf /").is_err());
    }

    #[test]
    fn bad_values_say_which_flag() {
        for (args, needle) in [
            (&["--max-conns", "0"][..], "--max-conns"),
            (&["--buffer", "12q"][..], "--buffer"),
            (&["--mark", "3"][..], "single bit"),
            (&["--frobnicate"][..], "unknown option --frobnicate"),
            (&["--queue"][..], "--queue needs a value"),
            (&["launch"][..], "unknown command"),
            (&["--server-cc", "bb r"][..], "--server-cc"),
            (
                &["--snoop", "wlan0", "--snoop-queue", "3135"][..],
                "--snoop-queue",
            ),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?} gave {e}");
        }
    }

    #[test]
    fn rates_and_durations_take_sqm_units() {
        assert_eq!(parse_rate("x", "10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("x", "850kbit"), Ok(850_000));
        assert_eq!(parse_rate("x", "1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("x", "2.5mbit"), Ok(2_500_000));
        assert_eq!(parse_duration("x", "600ms"), Ok(Duration::from_millis(600)));
        assert_eq!(parse_duration("x", "0.6s"), Ok(Duration::from_millis(600)));
        assert_eq!(
            parse_duration("x", "2500us"),
            Ok(Duration::from_micros(2500))
        );
        for bad in [".5mbit", "1e3mbit", "-1mbit", "1..2mbit", "1.2.3mbit"] {
            let e = parse_rate("--uplink", bad).unwrap_err().to_string();
            assert!(
                e.contains("is not a rate") || e.contains("out of range"),
                "{bad}: {e}"
            );
        }
        for (bad, needle) in [
            ("10", "needs a unit"),
            ("10mbps", "bytes per second"),
            ("fastmbit", "is not a rate"),
            ("1kbit", "out of range"),
            ("200gbit", "out of range"),
        ] {
            let e = parse_rate("--uplink", bad).unwrap_err().to_string();
            assert!(e.contains("--uplink") && e.contains(needle), "{bad}: {e}");
        }
        for (bad, needle) in [("600", "needs a unit"), ("11s", "out of range")] {
            let e = parse_duration("--rtt", bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn link_settings_tune_the_leg_over_the_link() {
        let c = p(&[
            "--uplink",
            "10mbit",
            "--downlink",
            "50mbit",
            "--rtt",
            "600ms",
        ])
        .unwrap();
        let link = c.link.unwrap();
        assert_eq!(link.leg, LinkLeg::Server);
        assert_eq!(link.bdp_bytes(10_000_000), 750_000);
        assert_eq!(link.initcwnd(), Some(518));
        assert_eq!(c.server_leg.pacing_bytes_per_s, Some(1_250_000));
        assert_eq!(c.server_leg.congestion.as_deref(), Some("bbr"));
        // 2 x BDP = 1.5 MB: fixed only if autotuning cannot reach it.
        let fixed = autotuning_ceiling().is_some_and(|max| max < 1_500_000);
        assert_eq!(c.server_leg.sndbuf_bytes, fixed.then_some(1_500_000));
        // The receive buffer is left to autotuning.
        assert_eq!(c.server_leg.rcvbuf_bytes, None);
        assert!(c.bbr_by_link);
        assert_eq!(c.client_leg.pacing_bytes_per_s, None);
        // An explicit buffer wins; at a gateway the client leg sends
        // downloads at the downlink rate.
        let c = p(&[
            "--downlink",
            "50mbit",
            "--rtt",
            "0.6s",
            "--link-leg",
            "client",
            "--client-sndbuf",
            "1m",
        ])
        .unwrap();
        assert_eq!(c.client_leg.pacing_bytes_per_s, Some(6_250_000));
        assert_eq!(c.client_leg.sndbuf_bytes, Some(1 << 20));
        assert_eq!(c.server_leg, LegOptions::default());
        // A short link keeps the kernel's congestion control; a chosen
        // one is kept.
        let short = p(&["--uplink", "16mbit", "--rtt", "40ms"]).unwrap();
        assert_eq!(short.server_leg.congestion, None);
        assert_eq!(short.server_leg.pacing_bytes_per_s, Some(2_500_000));
        let chosen = p(&[
            "--uplink",
            "5mbit",
            "--rtt",
            "600ms",
            "--server-cc",
            "cubic",
        ])
        .unwrap();
        assert_eq!(chosen.server_leg.congestion.as_deref(), Some("cubic"));
        // BBR the user chose is the user's: no handover to cubic.
        assert!(!chosen.bbr_by_link);
        for (args, needle) in [
            (&["--uplink", "10mbit"][..], "need --rtt"),
            (
                &["--rtt", "600ms"][..],
                "--rtt needs --uplink or --downlink",
            ),
            (&["--link-leg", "gateway"][..], "not server or client"),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(p(&[]).unwrap().link.is_none());
    }

    #[test]
    fn snoop_is_enabled_by_a_target() {
        assert!(p(&[]).unwrap().snoop.is_none());
        let c = p(&["--snoop", "wlan0", "--snoop-cache", "2m"]).unwrap();
        let s = c.snoop.unwrap();
        assert_eq!(s.cache_bytes, 2 << 20);
        assert_eq!(s.targets, vec![Target::Interface("wlan0".into())]);
    }
}
