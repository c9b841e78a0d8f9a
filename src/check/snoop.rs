//! `pepwrt check` on Snoop: where each target interface is (a routed
//! interface, a bridge port and its station count, missing), whether the
//! firewall can mark bridged stations, and whether flow offloading takes
//! flows away from Snoop.

use super::firewall::{DryRun, Finding};
use crate::config::{Backend, Config, SnoopConfig, Target};
use crate::snoop::place::{self, Offload, Place};

/// Every Snoop line of the report; `run` is the firewall's dry run.
pub fn findings(
    cfg: &Config,
    s: &SnoopConfig,
    backend: Option<Backend>,
    run: &mut dyn FnMut(&[&str], &str) -> DryRun,
) -> Vec<Finding> {
    let sys = "/sys";
    let mut out = Vec::new();
    let mut may_be_port = false;
    for t in &s.targets {
        let Target::Interface(name) = t else { continue };
        let p = place::place(sys, name);
        let line = place::describe(name, &p);
        out.push(match p {
            Place::Missing => {
                may_be_port = true;
                let mut line = line;
                let here = place::wireless_interfaces(sys);
                line.push_str(match here.is_empty() {
                    true => "; this router shows no wireless interface now",
                    false => "; wireless interfaces here:",
                });
                for name in here {
                    line.push(' ');
                    line.push_str(name);
                }
                Finding::Warn(line)
            }
            Place::Bridge => Finding::Warn(line),
            Place::BridgePort { .. } => {
                may_be_port = true;
                Finding::Ok(line)
            }
            Place::Routed { .. } => Finding::Ok(line),
        });
    }
    if may_be_port {
        out.extend(bridge_support(cfg, backend, run));
    }
    // A flowtable made by hand, outside fw4's option, shows here.
    let listed = crate::sys::spawn::run(&["nft", "list", "flowtables"], b"")
        .map(|r| String::from_utf8_lossy(&r.output).into_owned())
        .unwrap_or_default();
    out.push(offloading(place::offload("/etc/config/firewall"), &listed));
    out
}

/// Can the firewall mark frames by the bridge port they came in on?
fn bridge_support(
    cfg: &Config,
    backend: Option<Backend>,
    run: &mut dyn FnMut(&[&str], &str) -> DryRun,
) -> Option<Finding> {
    let w = cfg.station_mark();
    let (argv, input, package): (&[&str], String, &str) = match backend? {
        Backend::Nft => (
            &["nft", "-c", "-f", "-"],
            format!(
                "table bridge pepwrt_probe {{\n  chain probe {{\n    type filter hook prerouting priority -200; policy accept;\n    iifname \"lo\" meta mark set meta mark | {w:#x}\n  }}\n}}\n"
            ),
            "kmod-nft-bridge",
        ),
        Backend::Iptables => (
            &["ebtables", "-t", "nat", "-L"],
            String::new(),
            "ebtables and kmod-ebtables",
        ),
    };
    Some(match run(argv, &input) {
        DryRun::Loaded => Finding::Ok("snoop: the firewall marks stations by bridge port".into()),
        DryRun::Refused(e) | DryRun::NoTool(e) => Finding::Missing(format!(
            "snoop: stations behind a bridge port cannot be marked ({e}): install {package}"
        )),
    })
}

fn offloading(uci: Offload, flowtables: &str) -> Finding {
    if let Some(w) = place::offload_warning(uci) {
        return Finding::Warn(w.to_string());
    }
    if flowtables
        .lines()
        .any(|l| l.trim_start().starts_with("flowtable "))
    {
        return Finding::Warn(
            "snoop: a flowtable is loaded (nft list flowtables): the flows it offloads pass the forward hook, and Snoop with it; remove it or keep Snoop's hosts out of it".into(),
        );
    }
    Finding::Ok("snoop: flow offloading off".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloading_on_is_a_warning_with_the_fix() {
        let f = offloading(Offload::Software, "");
        assert!(
            matches!(&f, Finding::Warn(w) if w.contains("uci set firewall.@defaults[0].flow_offloading=0")),
            "{f:?}"
        );
        assert_eq!(
            offloading(Offload::Off, ""),
            Finding::Ok("snoop: flow offloading off".into())
        );
        // As nft lists fw4's flowtable.
        let listed = "table inet fw4 {\n\tflowtable ft {\n\t\thook ingress priority filter\n\t\tdevices = { br-lan, wan }\n\t}\n}\n";
        assert!(matches!(offloading(Offload::Off, listed), Finding::Warn(_)));
    }

    #[test]
    fn a_kernel_without_the_bridge_family_is_named_with_its_package() {
        let cfg = Config::default();
        let mut refuse = |argv: &[&str], input: &str| {
            assert_eq!(argv[0], "nft");
            assert!(input.contains("table bridge pepwrt_probe"));
            DryRun::Refused("Could not process rule: No such file or directory".into())
        };
        let f = bridge_support(&cfg, Some(Backend::Nft), &mut refuse);
        assert!(
            matches!(&f, Some(Finding::Missing(m)) if m.contains("kmod-nft-bridge")),
            "{f:?}"
        );
        let mut none = |_: &[&str], _: &str| DryRun::NoTool("ebtables: not found".into());
        let f = bridge_support(&cfg, Some(Backend::Iptables), &mut none);
        assert!(
            matches!(&f, Some(Finding::Missing(m)) if m.contains("kmod-ebtables")),
            "{f:?}"
        );
    }
}
