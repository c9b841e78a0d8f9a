//! Can the chosen firewall load every statement pepwrt's rules use? Each
//! statement goes alone, in a throwaway table or chain, to the firewall's
//! own dry run (`nft -c`, `iptables-restore --test`): nothing is
//! installed, and a missing kernel piece is named with its package.
//!
//! The dry run is a function passed in, so the verdicts are tested
//! without the host's firewall.

use crate::config::{Backend, Config};

/// What a dry run of one ruleset said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRun {
    Loaded,
    /// The firewall refused it, with its message.
    Refused(String),
    /// The tool could not be started (not installed).
    NoTool(String),
}

/// One line of `pepwrt check`'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Warn(String),
    Missing(String),
}

/// A statement the rules use, as the smallest ruleset that holds it.
struct Probe {
    name: &'static str,
    /// The tool and its arguments (the ruleset comes on stdin).
    argv: &'static [&'static str],
    ruleset: String,
    package: &'static str,
}

/// Runs `argv` with `input` on stdin.
pub fn dry_run(argv: &[&str], input: &str) -> DryRun {
    match crate::sys::spawn::run(argv, input.as_bytes()) {
        Ok(r) if r.success => DryRun::Loaded,
        Ok(r) => DryRun::Refused(first_error(&String::from_utf8_lossy(&r.output))),
        Err(e) => DryRun::NoTool(format!("{}: {e}", argv[0])),
    }
}

/// The line of a tool's output that says what is wrong, without nft's
/// location prefix.
fn first_error(text: &str) -> String {
    if let Some(line) = text.lines().find(|l| l.contains("Error: ")) {
        // After the last "Error: " (searched forwards: a backward string
        // search is 1.4 KB more on MIPS).
        let mut rest = line;
        while let Some((_, after)) = rest.split_once("Error: ") {
            rest = after;
        }
        return rest.trim().to_string();
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    first.unwrap_or("refused").to_string()
}

const NFT: &[&str] = &["nft", "-c", "-f", "-"];
const IPT4: &[&str] = &["iptables-restore", "--test", "--noflush"];
const IPT6: &[&str] = &["ip6tables-restore", "--test", "--noflush"];

fn nft_probe(name: &'static str, statement: String, package: &'static str) -> Probe {
    // QUIC's reject is in the forward hook, as the rule is.
    let hook = match name {
        "reject" => "forward priority filter",
        _ => "prerouting priority raw",
    };
    Probe {
        name,
        argv: NFT,
        ruleset: format!(
            "table inet pepwrt_probe {{\n  chain probe {{\n    type filter hook {hook}; policy accept;\n    {statement}\n  }}\n}}\n"
        ),
        package,
    }
}

fn xt_probe(
    name: &'static str,
    argv: &'static [&'static str],
    table: &str,
    rule: String,
    package: &'static str,
) -> Probe {
    Probe {
        name,
        argv,
        ruleset: format!("*{table}\n:pepwrt_probe - [0:0]\n-A pepwrt_probe {rule}\nCOMMIT\n"),
        package,
    }
}

/// The statements the rules for `cfg` use, one probe each.
fn probes(backend: Backend, cfg: &Config) -> Vec<Probe> {
    let (queue, port, mark) = (cfg.queue, cfg.port, cfg.mark);
    let mut probes = Vec::new();
    match backend {
        Backend::Nft => {
            let p = nft_probe;
            probes.push(p(
                "queue",
                format!("queue num {queue} bypass"),
                "kmod-nft-queue",
            ));
            probes.push(p(
                "tproxy",
                format!("meta l4proto tcp tproxy ip to :{port}"),
                "kmod-nft-tproxy",
            ));
            if cfg.ipv6 {
                probes.push(p(
                    "tproxy ip6",
                    format!("meta l4proto tcp tproxy ip6 to :{port}"),
                    "kmod-nft-tproxy",
                ));
            }
            probes.push(p(
                "socket",
                "meta l4proto tcp socket transparent 1 accept".into(),
                "kmod-nft-socket",
            ));
            probes.push(p(
                "ct mark",
                format!("ct mark & {mark:#x} == {mark:#x} ct mark set ct mark | {mark:#x}"),
                "kmod-nft-core",
            ));
            probes.push(p(
                "fib",
                "fib daddr type local return".into(),
                "kmod-nft-fib",
            ));
            if cfg.snoop.is_some() {
                probes.push(p("notrack", "notrack".into(), "kmod-nft-core"));
            }
            if cfg.reject_quic {
                probes.push(p(
                    "reject",
                    "udp dport 443 reject with icmpx type port-unreachable".into(),
                    "kmod-nft-core",
                ));
            }
        }
        Backend::Iptables => {
            let families: &[&'static [&'static str]] =
                if cfg.ipv6 { &[IPT4, IPT6] } else { &[IPT4] };
            for &argv in families {
                let x = |name, table, rule, package| xt_probe(name, argv, table, rule, package);
                probes.push(x(
                    "NFQUEUE",
                    "mangle",
                    format!("-p tcp -j NFQUEUE --queue-num {queue} --queue-bypass"),
                    "iptables-mod-nfqueue",
                ));
                probes.push(x(
                    "TPROXY",
                    "mangle",
                    format!("-p tcp -j TPROXY --on-port {port} --tproxy-mark {mark:#x}/{mark:#x}"),
                    "iptables-mod-tproxy",
                ));
                probes.push(x(
                    "socket",
                    "mangle",
                    "-p tcp -m socket --transparent -j ACCEPT".into(),
                    "iptables-mod-socket",
                ));
                probes.push(x(
                    "CONNMARK",
                    "mangle",
                    format!("-m connmark --mark {mark:#x}/{mark:#x} -j CONNMARK --save-mark --mask {mark:#x}"),
                    "iptables-mod-conntrack-extra",
                ));
                if cfg.snoop.is_some() {
                    probes.push(x("CT", "raw", "-j CT --notrack".into(), "kmod-ipt-raw"));
                }
                if cfg.reject_quic {
                    let (icmp, package) = if argv == IPT4 {
                        ("icmp", "kmod-ipt-core")
                    } else {
                        ("icmp6", "kmod-ip6tables")
                    };
                    probes.push(x(
                        "REJECT",
                        "filter",
                        format!(
                            "-p udp --dport 443 -j REJECT --reject-with {icmp}-port-unreachable"
                        ),
                        package,
                    ));
                }
            }
        }
    }
    probes
}

/// Each statement the rules use, tried with `run`: one line for all that
/// load, one for each that does not.
pub fn probe(
    backend: Backend,
    cfg: &Config,
    run: &mut dyn FnMut(&[&str], &str) -> DryRun,
) -> Vec<Finding> {
    let tool = match backend {
        Backend::Nft => "nft",
        Backend::Iptables => "iptables",
    };
    let mut loaded = Vec::new();
    let mut findings = Vec::new();
    for p in probes(backend, cfg) {
        match run(p.argv, &p.ruleset) {
            DryRun::Loaded if loaded.contains(&p.name) => {}
            DryRun::Loaded => loaded.push(p.name),
            DryRun::NoTool(e) => {
                let other = match backend {
                    Backend::Nft => "--backend iptables on fw3",
                    Backend::Iptables => "--backend nft on fw4",
                };
                return vec![Finding::Missing(format!(
                    "{e}: the {tool} backend needs it (or choose {other})"
                ))];
            }
            DryRun::Refused(e) if e.contains("Operation not permitted") => {
                return vec![Finding::Warn(format!(
                    "{tool} cannot be probed without root or CAP_NET_ADMIN ({e})"
                ))];
            }
            DryRun::Refused(e) => findings.push(Finding::Missing(format!(
                "{tool} cannot load the rules' {} statement ({e}): install {}",
                p.name, p.package
            ))),
        }
    }
    if !loaded.is_empty() {
        let line = format!("{tool} loads the rules' {}", loaded.join(", "));
        findings.insert(0, Finding::Ok(line));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A firewall whose kernel lacks the statements containing `absent`.
    fn without(absent: &'static str) -> impl FnMut(&[&str], &str) -> DryRun {
        move |_, ruleset| {
            if ruleset.contains(absent) {
                DryRun::Refused("Could not process rule: No such file or directory".into())
            } else {
                DryRun::Loaded
            }
        }
    }

    #[test]
    fn nft_without_queue_is_missing_with_its_package() {
        let cfg = Config::default();
        let found = probe(Backend::Nft, &cfg, &mut without("queue num"));
        assert_eq!(
            found[0],
            Finding::Ok("nft loads the rules' tproxy, tproxy ip6, socket, ct mark, fib".into())
        );
        assert_eq!(
            found[1],
            Finding::Missing(
                "nft cannot load the rules' queue statement (Could not process rule: No such file or directory): install kmod-nft-queue".into()
            )
        );
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn iptables_probes_each_family_and_snoops_notrack() {
        let mut cfg = Config {
            snoop: Some(Default::default()),
            ..Config::default()
        };
        let mut tools = Vec::new();
        let found = probe(Backend::Iptables, &cfg, &mut |argv, ruleset| {
            tools.push(argv[0].to_string());
            assert!(ruleset.starts_with('*') && ruleset.ends_with("COMMIT\n"));
            DryRun::Loaded
        });
        assert_eq!(
            found,
            vec![Finding::Ok(
                "iptables loads the rules' NFQUEUE, TPROXY, socket, CONNMARK, CT".into()
            )]
        );
        assert!(tools.contains(&"ip6tables-restore".to_string()));
        cfg.ipv6 = false;
        let found = probe(Backend::Iptables, &cfg, &mut without("TPROXY"));
        assert!(
            matches!(&found[1], Finding::Missing(m) if m.contains("install iptables-mod-tproxy")),
            "{found:?}"
        );
    }

    #[test]
    fn quic_reject_probes_reject_in_the_forward_hook() {
        let cfg = Config {
            reject_quic: true,
            ..Config::default()
        };
        let mut sets = Vec::new();
        let found = probe(Backend::Nft, &cfg, &mut |_, ruleset| {
            sets.push(ruleset.to_string());
            DryRun::Loaded
        });
        assert!(matches!(&found[..], [Finding::Ok(l)] if l.ends_with("fib, reject")));
        assert!(
            sets.iter()
                .any(|r| r.contains("hook forward priority filter;")
                    && r.contains("udp dport 443 reject with icmpx type port-unreachable"))
        );
        let found = probe(Backend::Iptables, &cfg, &mut without("REJECT"));
        let missing: Vec<_> = found[1..].iter().collect();
        assert_eq!(missing.len(), 2, "{found:?}");
        assert!(matches!(missing[0], Finding::Missing(m) if m.ends_with("install kmod-ipt-core")));
        assert!(matches!(missing[1], Finding::Missing(m) if m.ends_with("install kmod-ip6tables")));
        let plain = probe(Backend::Nft, &Config::default(), &mut without("reject"));
        assert_eq!(plain.len(), 1, "{plain:?}");
    }

    #[test]
    fn a_missing_tool_or_permission_is_one_line() {
        let cfg = Config::default();
        let found = probe(Backend::Nft, &cfg, &mut |_, _| {
            DryRun::NoTool("nft: No such file or directory".into())
        });
        assert_eq!(
            found,
            vec![Finding::Missing(
                "nft: No such file or directory: the nft backend needs it (or choose --backend iptables on fw3)".into()
            )]
        );
        let found = probe(Backend::Nft, &cfg, &mut |_, _| {
            DryRun::Refused("Operation not permitted".into())
        });
        assert!(matches!(&found[..], [Finding::Warn(_)]), "{found:?}");
    }

    #[test]
    fn the_error_line_is_kept_without_nfts_location() {
        let out = "/dev/stdin:4:5-9: Error: Could not process rule: No such file or directory\n    queue num 3135 bypass\n    ^^^^^\n";
        assert_eq!(
            first_error(out),
            "Could not process rule: No such file or directory"
        );
        // The text after the last "Error: ", as rsplit gives it.
        for line in [
            "Error: a",
            "x Error: Error: b ",
            "Error: ",
            "1: Error: c Error:d Error: e",
        ] {
            let expected = line.rsplit("Error: ").next().unwrap().trim();
            assert_eq!(first_error(line), expected, "{line}");
        }
    }
}
