//! The help pages: an overview, and one page per subcommand laid out
//! like a manual page (synopsis, description, options, exit status,
//! examples). Every option a page names is one its subcommand takes
//! (tests/cli.rs holds each page to that).
//!
//! `\t` at the start of a line stands for the 29 spaces that align an
//! option's description under the one above: stored as one byte, they
//! leave 1.5 KB out of the MIPS binary. `page` puts the spaces back.

use super::model::Subcommand;

/// `pepwrt --help`: what pepwrt is and its subcommands.
pub const OVERVIEW: &str = "\
pepwrt - transparent split-TCP performance enhancing proxy for routers

SYNOPSIS:
    pepwrt [run] [OPTIONS]       run the proxy (the default command)
    pepwrt check [OPTIONS]       check that this system can run it
    pepwrt rules [OPTIONS]       print the firewall and routing setup
    pepwrt status [OPTIONS]      show counters and live connections
    pepwrt help [COMMAND]        this page, or COMMAND's (as COMMAND --help)
    pepwrt -V | --version

DESCRIPTION:
    A connection crossing the router is split: its SYN reaches NFQUEUE
    --queue, TPROXY hands it to pepwrt's listener on --port, and pepwrt
    opens its own connection to the real destination and relays the bytes.
    With the pool full or the connection excluded, the SYN passes and the
    connection is forwarded as usual; so is all traffic while pepwrt is
    stopped.

    check and rules take run's options and check, or print the setup
    for, exactly what run is given. Other commands' options are refused.

EXIT STATUS:
    0 success, 1 runtime failure, 2 bad command line or configuration,
    3 missing kernel support

See 'pepwrt COMMAND --help' for the options of each command.
";

/// `pepwrt run --help`: every option of the daemon.
pub const RUN: &str = "\
pepwrt run - run the split-TCP proxy

SYNOPSIS:
    pepwrt [run] [-f] [--log-level LEVEL] [--control PATH] [OPTIONS]

DESCRIPTION:
    Allocates the pool, binds the SYN queue, the transparent listener and
    the status socket, and relays split connections until SIGTERM or
    SIGINT. The firewall and routing setup comes from 'pepwrt rules' for
    the same options; OpenWrt's init script installs both.

GENERAL OPTIONS:
    -f, --foreground         log to stderr instead of syslog (daemon facility)
    --log-level LEVEL        error, warn, info or debug [default: info]
    --control PATH           status socket [default: /var/run/pepwrt.sock]
    --user NAME              once set up, run as this user (e.g. nobody)
\twith only CAP_NET_ADMIN and CAP_NET_RAW

INTERCEPTION:
    --queue NUM              NFQUEUE number for SYNs [default: 3135]
    --port PORT              transparent listener port [default: 3135]
    --mark BIT               packet mark bit for split SYNs; pepwrt also
\towns the three bits above it (decided SYNs,
\tSnoop's resends, bridged Wi-Fi stations)
\t[default: 0x10000]
    --table NUM              routing table for marked packets [default: 313]
    --intercept IF|CIDR      intercept SYNs arriving on this interface or
\tfrom this subnet; repeatable [default: all].
\tOn a router name the LAN side (e.g. br-lan),
\tor connections from the WAN are split too and
\tmeet its input firewall, not its forward rules
    --exclude-port PORT      never split connections to this port; repeatable
    --quic pass|reject       QUIC (HTTP/3, UDP to port 443) forwarded from
\tthe intercepted side: pass [default], or
\treject at once (ICMP port unreachable), so
\tbrowsers fall back to TCP, which is split
    --no-ipv6                IPv4 only

POOL:
    --max-conns N            split connections at once, 1-65000 [default: 128]
    --buffer BYTES           bytes in flight per direction per connection,
\t4096-16777216, suffixes k and m [default: 32k]
    --idle-timeout SECS      close connections idle this long [default: 600]
    --connect-timeout SECS   give up on the outgoing connect [default: 10]
    At most max-conns x 2 x buffer, in kernel pipes made at start;
    run and check refuse more than the kernel has (MemAvailable).

OUTGOING LEG (router to server):
    --outgoing-source client|router
\tthe outgoing leg's source: the client's address
\t(transparent, the default) or the router's
    --server-cc NAME         congestion control, e.g. bbr or cubic
    --server-nodelay         set TCP_NODELAY
    --server-quickack        set TCP_QUICKACK
    --server-sndbuf BYTES    SO_SNDBUF (large windows on long links)
    --server-rcvbuf BYTES    SO_RCVBUF
    --server-mss BYTES       MSS [default: the client's SYN MSS]
    --server-fastopen        TCP fast open on the outgoing connect
    --tunnel IF              the link is inside tunnel IF, with pepwrt at
\tits far end: IF's routes get the windows
    --zero-rtt               with --tunnel IF: data in the SYN without a
\tcookie, on IF's routes only
    --initcwnd SEGMENTS      initial windows of the long legs' routes
\t(Linux starts at 10; a long link fills
\tfaster from 32-64), set by `pepwrt rules`

LINK (the slow link's figures, like SQM's; optional):
    --uplink RATE            the link's rate from this side to the far side
    --downlink RATE          its rate toward this side; RATE is
\tbits per second with a unit: 850kbit,
\t10mbit, 1gbit
    --rtt DURATION           the link's round-trip time when idle, e.g.
\t600ms (GEO), 40ms (LEO), 0.1s
    --link-leg server|client which leg crosses the link: server, pepwrt
\tin the users' router [default], or client,
\tpepwrt at the far end (a gateway), which sends
\tdownloads at the downlink rate. Give both ends
\tthe same --uplink and --downlink.
    The leg sending over the link is paced at its rate (legs sending at
    once share it). From 200 ms RTT it uses bbr (unless --*-cc is given),
    cubic while the far end's window is under half the BDP (rate x rtt),
    and restarts bbr instead of idling for its RTT probe. Its send buffer
    may grow to 2 BDP; with --tunnel its receive buffer is 2 BDP. `pepwrt
    rules` gives the long leg's routes one BDP as initial windows (the
    default routes, at a gateway those via --intercept, with --tunnel the
    tunnel's; --initcwnd wins).

CLIENT LEG (client to router):
    --client-cc NAME, --client-nodelay (on by default; --client-delay turns it
    off), --client-quickack, --client-sndbuf BYTES, --client-rcvbuf BYTES,
    --client-mss BYTES       as above, for the intercepted connection

SNOOP (local recovery toward lossy wireless hosts):
    --snoop IF|CIDR          snoop forwarded TCP toward this interface or
\tsubnet; repeatable; enables Snoop. A Wi-Fi
\tport of a bridge (phy0-ap0 in br-lan) takes
\tits stations only, not the wired hosts
    --snoop-queue NUM        NFQUEUE number for snooped packets [default: 3136]
    --snoop-flows N          flows tracked at once [default: 64]
    --snoop-cache BYTES      segment cache, suffixes k and m [default: 1m]

EXIT STATUS:
    0 stopped by a signal, 1 runtime failure (a port or queue in use),
    2 bad command line or configuration (buffers that do not fit in
    memory, an unknown --user), 3 missing kernel support

EXAMPLES:
    pepwrt run -f --intercept br-lan
    pepwrt run --intercept br-lan --uplink 10mbit --downlink 50mbit --rtt 600ms
";

/// `pepwrt check --help`.
pub const CHECK: &str = "\
pepwrt check - check that this system can run pepwrt so configured

SYNOPSIS:
    pepwrt check [--backend nft|iptables] [--control PATH] [RUN OPTIONS]

DESCRIPTION:
    Checks, without changing anything, what 'pepwrt run' with the same
    options needs: the congestion control of each leg, the user to run
    as, room in memory for the buffers, the NFQUEUE and the listener
    port, the kernel's TPROXY, socket match and conntrack support, and
    with --backend that the firewall can load every statement the rules
    use.
    One line each, starting with its verdict:
        ok       found, and what was found (e.g. congestion control bbr)
        WARN     works, but worth a look
        BAD      the configuration is wrong for this system
        BUSY     in use, e.g. by a running pepwrt
        MISSING  the kernel or firewall lacks it; the line names the
                 package that has it
    What this system does not tell (e.g. no module list) is left out.

OPTIONS:
    --backend nft|iptables   also dry-run each statement of pepwrt's rules
\tin this firewall ('nft -c', 'iptables-restore
\t--test'; nothing is installed)
    --control PATH           a pepwrt running there frees its buffers on
\trestart: they count as available
\t[default: /var/run/pepwrt.sock]
    check takes every option of run but -f (see 'pepwrt run --help').

EXIT STATUS:
    0 everything needed is there (WARN lines allowed), 1 the queue or
    port is in use, 2 bad configuration, 3 missing kernel or firewall
    support

EXAMPLES:
    pepwrt check --backend nft --intercept br-lan --max-conns 512
";

/// `pepwrt rules --help`.
pub const RULES: &str = "\
pepwrt rules - print the firewall and routing setup for pepwrt

SYNOPSIS:
    pepwrt rules [--backend nft|iptables] [--part all|firewall|routing]
                 [--delete] [RUN OPTIONS]

DESCRIPTION:
    Prints, and changes nothing, the setup that sends new connections'
    SYNs to pepwrt's queue and split connections to its listener: a
    firewall part (nft or iptables, refusing QUIC if asked) and a
    routing part (a policy rule, a table for marked packets, and on the
    long leg's routes the link's initial windows and the tunnel's
    fastopen_no_cookie). Give it the options run gets.

OPTIONS:
    --backend nft|iptables   rule flavour [default: nft]
    --delete                 print the commands that remove the setup instead
\t(route attributes: those recorded in
\t/var/run/pepwrt, whatever the flags)
    --part all|firewall|routing
\tall: one shell script [default]; firewall: nft's
\tbare ruleset (for nft -f or a fw4 include) or the
\tiptables commands; routing: the ip rule/route
\tcommands
    rules takes every option of run but -f and the status socket (see
    'pepwrt run --help').

EXIT STATUS:
    0 printed, 2 bad command line

EXAMPLES:
    pepwrt rules --intercept br-lan | sh
    pepwrt rules --backend nft --part firewall --intercept br-lan > pepwrt.nft
    pepwrt rules --delete --intercept br-lan | sh
";

/// `pepwrt status --help`.
pub const STATUS: &str = "\
pepwrt status - show a running pepwrt's counters and connections

SYNOPSIS:
    pepwrt status [--json] [--control PATH]

DESCRIPTION:
    Asks the pepwrt listening on the status socket for its report: the
    pool, the counters of split and passed connections and why, the link
    settings in force, Snoop's counters, and each live connection.

OPTIONS:
    --json                   machine-readable output (one JSON object)
    --control PATH           status socket [default: /var/run/pepwrt.sock]

EXIT STATUS:
    0 reported, 1 pepwrt is not running or cannot be reached, 2 bad
    command line
";

/// The page for `pepwrt [COMMAND] --help`, as printed.
pub fn page(topic: Option<Subcommand>) -> &'static str {
    let page = stored(topic).replace('\t', DESCRIPTION_INDENT);
    // Printed once, as the program ends.
    page.leak()
}

/// The column an option's description starts at.
const DESCRIPTION_INDENT: &str = "                             ";

fn stored(topic: Option<Subcommand>) -> &'static str {
    match topic {
        None => OVERVIEW,
        Some(Subcommand::Run) => RUN,
        Some(Subcommand::Check) => CHECK,
        Some(Subcommand::Rules) => RULES,
        Some(Subcommand::Status) => STATUS,
    }
}
