//! The command line as a whole: subcommands, which options each takes,
//! help, and values reaching the configuration.

use super::*;
use crate::link::{Congestion, LegOptions, LinkLeg};
use Subcommand::{Rules, Status};

fn p(args: &[&str]) -> Result<Config, ConfigError> {
    parse(args.iter().copied(), &System::default())
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
    assert_eq!(c.server_leg.congestion, Some(Congestion::Bbr));
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
    let c = p(&["check", "--backend", "nft"]).unwrap();
    assert_eq!(
        c.command,
        Command::Check {
            backend: Some(Backend::Nft)
        }
    );
    assert_eq!(
        p(&["check"]).unwrap().command,
        Command::Check { backend: None }
    );
}

#[test]
fn help_names_its_subcommand() {
    assert_eq!(p(&["--help"]).unwrap().command, Command::Help(None));
    assert_eq!(p(&["help"]).unwrap().command, Command::Help(None));
    assert_eq!(
        p(&["rules", "--help"]).unwrap().command,
        Command::Help(Some(Rules))
    );
    assert_eq!(
        p(&["help", "status"]).unwrap().command,
        Command::Help(Some(Status))
    );
    // Help needs no complete set of link figures...
    assert!(p(&["run", "--uplink", "1mbit", "-h"]).is_ok());
    // ... but an option of another command is still named.
    assert!(p(&["run", "--json", "--help"]).is_err());
    assert!(p(&["help", "rules", "status"]).is_err());
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
        (&["--no-ipv6", "--intercept", "fd00::/8"][..], "--no-ipv6"),
    ] {
        let e = p(args).unwrap_err().to_string();
        assert!(e.contains(needle), "{args:?} gave {e}");
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
    assert_eq!(c.link.unwrap().leg, LinkLeg::Server);
    assert_eq!(c.server_leg.pacing_bytes_per_s, Some(1_250_000));
    // What the system says reaches the link's policy.
    let tight = System {
        autotuning_ceiling_bytes: Some(1 << 20),
    };
    let args = ["--uplink", "10mbit", "--rtt", "600ms"];
    let c = parse(args, &tight).unwrap();
    assert_eq!(c.server_leg.sndbuf_bytes, Some(1_500_000));
    // An explicit buffer wins; at a gateway the client leg sends
    // downloads at the downlink rate.
    let c = parse(
        [
            "--downlink",
            "50mbit",
            "--rtt",
            "0.6s",
            "--link-leg",
            "client",
            "--client-sndbuf",
            "1m",
        ],
        &tight,
    )
    .unwrap();
    assert_eq!(c.client_leg.pacing_bytes_per_s, Some(6_250_000));
    assert_eq!(c.client_leg.sndbuf_bytes, Some(1 << 20));
    assert_eq!(c.server_leg, LegOptions::default());
    // BBR the user chose is the user's: no handover to cubic.
    let chosen = p(&[
        "--uplink",
        "5mbit",
        "--rtt",
        "600ms",
        "--server-cc",
        "cubic",
    ])
    .unwrap();
    assert_eq!(chosen.server_leg.congestion, Some(Congestion::Cubic));
    assert!(!chosen.bbr_by_link);
    for (args, needle) in [
        (&["--uplink", "10mbit"][..], "need --rtt"),
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

#[test]
fn the_autotuning_ceiling_is_tcp_wmems_third_field() {
    let s = System::from_tcp_wmem("4096\t16384\t4194304\n");
    assert_eq!(s.autotuning_ceiling_bytes, Some(4_194_304));
    assert_eq!(System::from_tcp_wmem("").autotuning_ceiling_bytes, None);
}

#[test]
fn a_value_given_to_a_switch_is_worded_as_lexopt_words_it() {
    for args in [&["--json=1"][..], &["run", "--no-ipv6=a'b\"c"], &["-f=3"]] {
        let ours = p(args).unwrap_err().to_string();
        let mut parser = lexopt::Parser::from_args(args.iter().copied());
        let lexopts = loop {
            match parser.next() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("lexopt took {args:?}"),
                Err(e) => break e.to_string(),
            }
        };
        assert_eq!(ours, format!("{lexopts} (see 'pepwrt --help')"), "{args:?}");
    }
}

#[test]
fn zero_rtt_opens_go_only_into_a_tunnel_to_another_pepwrt() {
    // The router: fast open on its outgoing legs, cookieless on the
    // tunnel's routes.
    let r = p(&["--intercept", "br-lan", "--tunnel", "wg0", "--zero-rtt"]).unwrap();
    assert!(r.outgoing_fast_open() && r.zero_rtt_routes());
    assert!(!r.listener_fast_open());
    // The gateway: its listener takes them, from the tunnel alone.
    let gw = ["--link-leg", "client", "--tunnel", "wg0", "--zero-rtt"];
    let g = p(&[&gw[..], &["--intercept", "wg0"]].concat()).unwrap();
    assert!(g.listener_fast_open());
    assert!(!g.outgoing_fast_open() && !g.zero_rtt_routes());
    for open in [&[][..], &["--intercept", "wg0", "--intercept", "eth0"][..]] {
        let e = p(&[&gw[..], open].concat()).unwrap_err().message;
        assert!(e.contains("--intercept must name the tunnel alone"), "{e}");
    }
    let e = p(&["--zero-rtt"]).unwrap_err().message;
    assert!(e.contains("needs --tunnel"), "{e}");
    let cookie = p(&["--server-fastopen"]).unwrap();
    assert!(cookie.outgoing_fast_open() && !cookie.zero_rtt_routes());
    let e = p(&["--tunnel", "198.18.0.0/15"]).unwrap_err().message;
    assert!(e.contains("not an interface name"), "{e}");
}
