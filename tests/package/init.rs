//! The shell scripts, and the init script against stand-ins.

use super::*;

// ---- shell scripts -------------------------------------------------------

const SCRIPTS: &[&str] = &[
    "openwrt/pepwrt/files/pepwrt.init",
    "openwrt/pepwrt/files/pepwrt.uci-defaults",
    "openwrt/pepwrt/files/firewall.include",
    "tests/fixtures/stubs/functions.sh",
    "tests/fixtures/stubs/procd.sh",
    "tests/fixtures/stubs/rc.common",
    "tests/fixtures/stubs/record",
    "tests/fixtures/stubs/pepwrt",
];

#[test]
fn scripts_pass_busybox_sh_n_and_shellcheck() {
    need_tool("busybox", "busybox");
    need_tool("shellcheck", "shellcheck");
    for s in SCRIPTS {
        let out = Command::new("busybox")
            .args(["sh", "-n", s])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "busybox sh -n {s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        shellcheck(s);
    }
    for s in [
        "cross/build",
        "cross/arch.sh",
        "openwrt/build-packages",
        "openwrt/build-ipk",
        "openwrt/build-apk",
    ] {
        shellcheck(s);
    }
}

#[test]
fn generated_rule_scripts_pass_busybox_sh_n_and_shellcheck() {
    need_tool("busybox", "busybox");
    need_tool("shellcheck", "shellcheck");
    let tmp = TempDir::new("rules");
    let flags = [
        "--intercept",
        "br-lan",
        "--exclude-port",
        "22",
        "--snoop",
        "wlan0",
    ];
    for (i, extra) in [
        vec!["--backend", "iptables", "--part", "firewall"],
        vec!["--backend", "iptables", "--part", "firewall", "--delete"],
        vec!["--part", "routing"],
        vec!["--part", "routing", "--delete"],
        vec!["--backend", "iptables"],
    ]
    .iter()
    .enumerate()
    {
        let out = Command::new(env!("CARGO_BIN_EXE_pepwrt"))
            .arg("rules")
            .args(extra)
            .args(flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "pepwrt rules {extra:?}");
        let f = tmp.0.join(format!("rules{i}.sh"));
        std::fs::write(&f, &out.stdout).unwrap();
        let o = Command::new("busybox")
            .args(["sh", "-n"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "busybox sh -n: rules {extra:?}");
        let o = Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "shellcheck: rules {extra:?}\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

// ---- the init script against stubs ---------------------------------------

/// A fake router root: stub commands on PATH, /etc/config/pepwrt, and
/// paths of the init script pointed inside it.
struct Router {
    dir: TempDir,
    fw4: bool,
    env: Vec<(String, String)>,
}

impl Router {
    /// What the stand-in `pepwrt check` exits with and prints.
    fn check_answers(&mut self, exit: u8, out: &str) {
        self.set("CHECK_EXIT", &exit.to_string());
        self.set("CHECK_OUT", out);
    }

    fn new(config: &str, fw4: bool) -> Router {
        need_tool("busybox", "busybox");
        let dir = TempDir::new("router");
        let d = &dir.0;
        let stubs = repo().join("tests/fixtures/stubs");
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("etc/config")).unwrap();
        for n in ["logger", "nft", "ip", "iptables", "ip6tables", "pidof"] {
            std::os::unix::fs::symlink(stubs.join("record"), d.join("bin").join(n)).unwrap();
        }
        std::os::unix::fs::symlink(stubs.join("pepwrt"), d.join("bin/pepwrt")).unwrap();
        // Generated scripts run under busybox ash too, as on the router.
        let busybox = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v busybox"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(busybox.trim(), d.join("bin/sh")).unwrap();
        std::fs::write(d.join("etc/config/pepwrt"), config).unwrap();
        Router {
            dir,
            fw4,
            env: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    fn set(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    /// Runs `/etc/init.d/pepwrt <action>`; returns (exit ok, log lines).
    fn run(&self, action: &str) -> (bool, Vec<String>) {
        let d = &self.dir.0;
        let mark = |on: bool, p: &str| {
            let f = d.join(p);
            if on {
                std::fs::write(&f, "#!/bin/sh\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            } else {
                let _ = std::fs::remove_file(&f);
            }
        };
        mark(self.fw4, "fw4");
        std::fs::write(
            d.join("overrides"),
            format!(
                "PROG={d}/bin/pepwrt\nSTATE_DIR={d}/var/etc/pepwrt\nNFT_RULES=$STATE_DIR/pepwrt.nft\n\
                 IPT_RULES=$STATE_DIR/firewall.sh\nFW4={d}/fw4\nREFUSED={d}/var/run/pepwrt.refused\n\
                 NET_DIR={d}/sys/class/net\n",
                d = d.display()
            ),
        )
        .unwrap();
        let log = d.join("log");
        std::fs::write(&log, "").unwrap();
        let mut cmd = Command::new("busybox");
        cmd.arg("sh")
            .arg(repo().join("tests/fixtures/stubs/rc.common"))
            .arg(repo().join("openwrt/pepwrt/files/pepwrt.init"))
            .arg(action)
            .current_dir(d)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", d.join("bin").display()),
            )
            .env("STUB_LOG", &log)
            .env("UCI_CONFIG_DIR", d.join("etc/config"))
            .env("STUB_OVERRIDES", d.join("overrides"))
            .env("PEPWRT_REAL", env!("CARGO_BIN_EXE_pepwrt"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let lines = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| l.replace(&*d.display().to_string(), "ROOT"))
            .collect();
        (out.status.success(), lines)
    }
}

fn config(main_extra: &str, snoop_extra: &str) -> String {
    let base = std::fs::read_to_string(repo().join("openwrt/pepwrt/files/pepwrt.config")).unwrap();
    // Options set later in a section win, as in UCI.
    let base = base.replacen("\toption enabled '0'\n", "\toption enabled '1'\n", 1);
    let base = base.replace(
        "\toption table '313'\n",
        &format!("\toption table '313'\n{main_extra}"),
    );
    format!("{base}{snoop_extra}")
}

#[test]
fn init_snoop_without_a_target_takes_the_wireless_interfaces() {
    // Snoop on, no target listed: what /sys/class/net says is wireless
    // (a phy80211 link), bridged access point or not; wired ports not.
    let cfg = config("", "").replace(
        "config snoop 'snoop'\n\t# 1 to snoop toward the targets below (local wireless recovery)\n\toption enabled '0'",
        "config snoop 'snoop'\n\toption enabled '1'",
    );
    assert!(
        cfg.contains("config snoop 'snoop'\n\toption enabled '1'"),
        "{cfg}"
    );
    let r = Router::new(&cfg, true);
    let net = r.path("sys/class/net");
    for (name, wireless) in [
        ("br-lan", false),
        ("lan1", false),
        ("phy0-ap0", true),
        ("phy1-ap0", true),
    ] {
        std::fs::create_dir_all(net.join(name)).unwrap();
        if wireless {
            std::fs::write(net.join(name).join("phy80211"), "").unwrap();
        }
    }
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    let line = command_line(&log).unwrap_or_default();
    assert!(
        line.contains("'--snoop' 'phy0-ap0' '--snoop' 'phy1-ap0'"),
        "{line}"
    );
    assert!(
        !line.contains("'lan1'") && !line.contains("'--snoop' 'br-lan'"),
        "{line}"
    );

    // None at all: said in the log, and Snoop stays off.
    for name in ["phy0-ap0", "phy1-ap0"] {
        std::fs::remove_dir_all(net.join(name)).unwrap();
    }
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    assert!(!command_line(&log).unwrap_or_default().contains("--snoop"));
    assert!(
        log.iter()
            .any(|l| l.contains("no target listed and no wireless interface found")),
        "{log:#?}"
    );
}

fn quoted(args: &[&str]) -> String {
    args.iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

const DEFAULT_FLAGS: &[&str] = &[
    "--log-level",
    "info",
    "--intercept",
    "br-lan",
    "--exclude-port",
    "22",
    "--max-conns",
    "128",
    "--buffer",
    "32k",
    "--idle-timeout",
    "600",
    "--connect-timeout",
    "10",
    "--outgoing-source",
    "client",
    "--link-leg",
    "server",
    "--quic",
    "pass",
    "--queue",
    "3135",
    "--port",
    "3135",
    "--mark",
    "0x10000",
    "--table",
    "313",
    "--user",
    "nobody",
];

fn command_line(log: &[String]) -> Option<String> {
    log.iter()
        .find_map(|l| l.strip_prefix("procd_set_param 'command' 'ROOT/bin/pepwrt' 'run' "))
        .map(String::from)
}

fn real_rules(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pepwrt"))
        .arg("rules")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn init_default_config_fw4_start_and_stop() {
    let r = Router::new(&config("", ""), true);
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    assert_eq!(
        command_line(&log).as_deref(),
        Some(quoted(DEFAULT_FLAGS).as_str()),
        "{log:#?}"
    );
    for want in [
        "procd_open_instance",
        "procd_set_param 'respawn' '3600' '5' '5'",
        "procd_set_param 'stderr' '1'",
        "procd_set_param 'limits' 'nofile=832 832'",
        "procd_close_instance",
        "procd_add_reload_trigger 'pepwrt'",
        "procd_add_interface_trigger 'interface.*.up' 'wan' '/etc/init.d/pepwrt' 'reload'",
        "nft '-c' '-f' 'ROOT/var/etc/pepwrt.new/pepwrt.nft'",
        "nft '-f' 'ROOT/var/etc/pepwrt/pepwrt.nft'",
        "ip 'rule' 'add' 'fwmark' '0x10000/0x10000' 'lookup' '313'",
        "ip 'route' 'add' 'local' '0.0.0.0/0' 'dev' 'lo' 'table' '313'",
        "ip '-6' 'route' 'add' 'local' '::/0' 'dev' 'lo' 'table' '313'",
    ] {
        assert!(
            log.iter().any(|l| l == want),
            "missing {want:?} in {log:#?}"
        );
    }
    // Validated before anything is installed, with the same flags and the
    // firewall backend the rules are written for.
    let check = log
        .iter()
        .position(|l| l.starts_with("pepwrt 'check' "))
        .expect("no check");
    assert_eq!(
        log[check],
        format!("pepwrt 'check' '--backend' 'nft' {}", quoted(DEFAULT_FLAGS))
    );
    assert!(check < log.iter().position(|l| l.starts_with("nft")).unwrap());
    assert!(
        !log.iter().any(|l| l.starts_with("iptables")),
        "fw4 must not use iptables"
    );
    // The nft file fw4 includes is exactly `pepwrt rules` for these flags.
    let mut args = vec!["--backend", "nft", "--part", "firewall"];
    args.extend_from_slice(DEFAULT_FLAGS);
    assert_eq!(
        std::fs::read_to_string(r.path("var/etc/pepwrt/pepwrt.nft")).unwrap(),
        real_rules(&args)
    );

    let (ok, log) = r.run("stop");
    assert!(ok, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l == "nft '-f' 'ROOT/var/etc/pepwrt/nft.del'"),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l == "ip 'route' 'flush' 'table' '313'"),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("rule' 'add")), "{log:#?}");
    assert!(!r.path("var/etc/pepwrt").exists(), "state left after stop");
}

#[test]
fn init_fw3_uses_iptables_script() {
    let r = Router::new(&config("\toption ipv6 '0'\n", ""), false);
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    let mut flags = DEFAULT_FLAGS.to_vec();
    flags.insert(flags.len() - 10, "--no-ipv6");
    assert_eq!(command_line(&log).as_deref(), Some(quoted(&flags).as_str()));
    assert!(
        log.iter()
            .any(|l| *l == format!("pepwrt 'check' '--backend' 'iptables' {}", quoted(&flags))),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("nft")), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l == "iptables '-w' '-t' 'mangle' '-I' 'PREROUTING' '-j' 'PEPWRT'"),
        "{log:#?}"
    );
    // IPv6 off: old IPv6 rules may be removed, none are added.
    assert!(
        !log.iter()
            .any(|l| (l.starts_with("ip6tables") || l.starts_with("ip '-6'")) && installs(l)),
        "{log:#?}"
    );
    // fw3's script include re-runs this file after each firewall reload.
    let mut args = vec!["--backend", "iptables", "--part", "firewall"];
    args.extend_from_slice(&flags);
    assert_eq!(
        std::fs::read_to_string(r.path("var/etc/pepwrt/firewall.sh")).unwrap(),
        real_rules(&args)
    );

    let (ok, log) = r.run("stop");
    assert!(ok);
    assert!(
        log.iter()
            .any(|l| l == "iptables '-w' '-t' 'mangle' '-X' 'PEPWRT'"),
        "{log:#?}"
    );
    assert!(!r.path("var/etc/pepwrt").exists());
}

#[test]
fn init_options_map_to_flags() {
    let main = "\toption server_cc ''\n\toption client_cc 'cubic'\n\toption server_fastopen '1'\n\
                \toption server_nodelay 'yes'\n\toption server_sndbuf '4m'\n\toption client_rcvbuf '256k'\n\
                \toption server_mss '1400'\n\toption outgoing_source 'router'\n\tlist intercept '198.18.2.0/24'\n\
                \tlist exclude_port '853'\n\toption log_level 'debug'\n\toption quic 'reject'\n";
    let snoop = "\toption enabled '1'\n\tlist target '198.19.0.0/16'\n";
    let r = Router::new(&config(main, snoop), true);
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    let want = quoted(&[
        "--log-level",
        "debug",
        "--intercept",
        "br-lan",
        "--intercept",
        "198.18.2.0/24",
        "--exclude-port",
        "22",
        "--exclude-port",
        "853",
        "--max-conns",
        "128",
        "--buffer",
        "32k",
        "--idle-timeout",
        "600",
        "--connect-timeout",
        "10",
        "--outgoing-source",
        "router",
        "--client-cc",
        "cubic",
        "--server-fastopen",
        "--server-nodelay",
        "--server-sndbuf",
        "4m",
        "--client-rcvbuf",
        "256k",
        "--server-mss",
        "1400",
        "--link-leg",
        "server",
        "--quic",
        "reject",
        "--queue",
        "3135",
        "--port",
        "3135",
        "--mark",
        "0x10000",
        "--table",
        "313",
        "--user",
        "nobody",
        "--snoop",
        "198.19.0.0/16",
        "--snoop-flows",
        "64",
        "--snoop-cache",
        "1m",
        "--snoop-queue",
        "3136",
    ]);
    assert_eq!(
        command_line(&log).as_deref(),
        Some(want.as_str()),
        "{log:#?}"
    );
    // procd's user and capabilities need a ujail; pepwrt drops root
    // itself instead (--user).
    assert!(
        !log.iter()
            .any(|l| l.contains("'user'") || l.contains("'capabilities'")),
        "{log:#?}"
    );
    let nft = std::fs::read_to_string(r.path("var/etc/pepwrt/pepwrt.nft")).unwrap();
    assert!(nft.contains("chain snoop"), "{nft}");
    assert!(nft.contains("chain quic"), "{nft}");
}

#[test]
fn init_zero_rtt_at_the_router_needs_ip_full() {
    let main = "\toption tunnel 'wg0'\n\toption zero_rtt '1'\n";
    let r = Router::new(&config(main, ""), true);
    busybox_ip(&r);
    let (ok, log) = r.run("start");
    assert!(!ok, "{log:#?}");
    assert_refused(
        &log,
        "zero_rtt needs the ip-full package (opkg install ip-full, or apk add ip-full)",
    );
    // At the gateway its listener needs no route of the router's.
    let main = "\toption tunnel 'wg0'\n\toption zero_rtt '1'\n\toption link_leg 'client'\n";
    let gw = config(main, "").replace("\tlist intercept 'br-lan'\n", "\tlist intercept 'wg0'\n");
    std::fs::write(r.path("etc/config/pepwrt"), gw).unwrap();
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    assert!(
        command_line(&log).unwrap().contains("'--zero-rtt'"),
        "{log:#?}"
    );
}

#[test]
fn init_link_settings_warn_when_ip_cannot_set_the_windows() {
    let warning = "logger '-t' 'pepwrt' '-p' 'daemon.warn' 'busybox's ip cannot give the routes";
    let r = Router::new(&config("", ""), true);
    busybox_ip(&r);
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    assert!(!log.iter().any(|l| l.starts_with(warning)), "{log:#?}");
    let main = "\toption uplink '5mbit'\n\toption downlink '50mbit'\n\toption rtt '600ms'\n";
    std::fs::write(r.path("etc/config/pepwrt"), config(main, "")).unwrap();
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    let line = log.iter().find(|l| l.starts_with(warning));
    assert!(
        line.is_some_and(|l| l.contains("install ip-full")),
        "{log:#?}"
    );
}

#[test]
fn init_max_conns_sets_nofile() {
    let r = Router::new(&config("\toption max_conns '1000'\n", ""), true);
    let (ok, log) = r.run("start");
    assert!(ok);
    assert!(
        log.iter()
            .any(|l| l == "procd_set_param 'limits' 'nofile=2576 2576'"),
        "{log:#?}"
    );
}

#[test]
fn init_disabled_starts_nothing() {
    let cfg = std::fs::read_to_string(repo().join("openwrt/pepwrt/files/pepwrt.config")).unwrap();
    let r = Router::new(&cfg, true);
    let (ok, log) = r.run("start");
    assert!(ok, "{log:#?}");
    assert!(
        !log.iter().any(|l| l.starts_with("procd_open_instance")),
        "{log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.starts_with("nft") || l.starts_with("ip ")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("logger '-t' 'pepwrt' '-p' 'daemon.info' 'disabled"))
    );
}

/// Adds rules (as opposed to removing earlier ones).
fn installs(l: &str) -> bool {
    l == "nft '-f' 'ROOT/var/etc/pepwrt/pepwrt.nft'"
        || l.contains("'add'")
        || (l.starts_with("ip") && (l.contains("'-I'") || l.contains("'-A'")))
}

fn assert_refused(log: &[String], reason: &str) {
    assert!(
        !log.iter().any(|l| l.starts_with("procd_open_instance")),
        "started anyway: {log:#?}"
    );
    assert!(
        !log.iter().any(|l| installs(l)),
        "rules installed anyway: {log:#?}"
    );
    let err = log
        .iter()
        .find(|l| l.starts_with("logger '-t' 'pepwrt' '-p' 'daemon.err'"))
        .unwrap_or_else(|| panic!("no error logged: {log:#?}"));
    assert!(err.contains(reason), "{err}");
}

#[test]
fn init_bad_configs_log_and_do_not_start() {
    for (main, reason) in [
        (
            "\toption buffer_size '3x'\n",
            "--buffer: '3x' is not a size",
        ),
        ("\toption max_conns 'lots'\n", "--max-conns"),
        ("\toption outgoing_source 'moon'\n", "--outgoing-source"),
        ("\tlist intercept 'br'lan'\n", "value with a quote"),
        ("\toption log_level 'chatty'\n", "--log-level"),
    ] {
        let r = Router::new(&config(main, ""), true);
        let (ok, log) = r.run("start");
        assert!(!ok, "start must fail for {main:?}");
        assert_refused(&log, reason);
        assert!(
            log.iter()
                .any(|l| l.contains("bad configuration in /etc/config/pepwrt")),
            "{log:#?}"
        );
    }
}

#[test]
fn init_bad_config_after_good_removes_old_rules() {
    let mut r = Router::new(&config("", ""), true);
    assert!(r.run("start").0);
    std::fs::write(
        r.path("etc/config/pepwrt"),
        config("\toption port 'x'\n", ""),
    )
    .unwrap();
    r.set("STUB_RUNNING", "1");
    let (ok, log) = r.run("reload");
    assert!(!ok);
    assert_refused(&log, "--port");
    assert!(
        log.iter()
            .any(|l| l == "nft '-f' 'ROOT/var/etc/pepwrt/nft.del'"),
        "{log:#?}"
    );
    assert!(!r.path("var/etc/pepwrt").exists());
}

#[test]
fn init_missing_kernel_support_does_not_start() {
    let mut r = Router::new(&config("", ""), true);
    r.check_answers(3, "ok      congestion control\nMISSING TPROXY: install kmod-nft-tproxy (fw4) or kmod-ipt-tproxy (fw3)");
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(
        &log,
        "kernel support missing, not starting: TPROXY: install kmod-nft-tproxy",
    );
}

#[test]
fn init_nft_without_queue_is_refused_by_the_check() {
    // `check --backend nft` dry-runs each statement of the rules; the
    // refusal names the statement and the package, and nothing is loaded.
    let mut r = Router::new(&config("", ""), true);
    r.check_answers(3, "ok      nft loads the rules' tproxy, socket\nMISSING nft cannot load the rules' queue statement (Could not process rule: No such file or directory): install kmod-nft-queue");
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(
        &log,
        "kernel support missing, not starting: nft cannot load the rules' queue statement",
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("pepwrt 'check' '--backend' 'nft' ")),
        "{log:#?}"
    );
}

#[test]
fn init_keeps_why_it_refused_for_the_status_page() {
    let mut r = Router::new(&config("", ""), true);
    let refused = r.path("var/run/pepwrt.refused");
    // A setting wrong for this system: check's BAD line, not its other lines.
    r.check_answers(2, "BAD     the buffers need 2031 GiB (--max-conns 65000 x 2 x --buffer 16 MiB) of the 64 MiB of memory available; lower --max-conns\nok      congestion control cubic");
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(&log, "not starting: the buffers need 2031 GiB");
    let why = std::fs::read_to_string(&refused).expect("refusal kept");
    assert!(
        why.starts_with("bad configuration in /etc/config/pepwrt, not starting: the buffers need")
            && !why.contains("congestion control")
            && why.trim_end().lines().count() == 1,
        "{why:?}"
    );
    // A bad flag: pepwrt's own line.
    let r2 = Router::new(
        &config("\toption uplink '10mbps'\n\toption rtt '600ms'\n", ""),
        true,
    );
    let (ok, _) = r2.run("start");
    assert!(!ok);
    let why = std::fs::read_to_string(r2.path("var/run/pepwrt.refused")).expect("refusal kept");
    assert!(why.contains("bps means bytes per second"), "{why:?}");
    // Started: the old reason goes; so it does when disabled or stopped.
    let r = Router::new(&config("", ""), true);
    std::fs::create_dir_all(r.path("var/run")).unwrap();
    std::fs::write(r.path("var/run/pepwrt.refused"), "old\n").unwrap();
    assert!(r.run("start").0);
    assert!(!r.path("var/run/pepwrt.refused").exists());
    std::fs::write(r.path("var/run/pepwrt.refused"), "old\n").unwrap();
    assert!(r.run("stop").0);
    assert!(!r.path("var/run/pepwrt.refused").exists());
    let off = config("", "").replacen("\toption enabled '1'\n", "\toption enabled '0'\n", 1);
    let r = Router::new(&off, true);
    std::fs::create_dir_all(r.path("var/run")).unwrap();
    std::fs::write(r.path("var/run/pepwrt.refused"), "old\n").unwrap();
    assert!(r.run("start").0);
    assert!(!r.path("var/run/pepwrt.refused").exists());
}

#[test]
fn init_reload_while_running_tolerates_its_own_queue_and_port() {
    let mut r = Router::new(&config("", ""), true);
    r.check_answers(1, "ok      congestion control\nBUSY    NFQUEUE 3135: in use\nBUSY    transparent listener on port 3135: in use (by a running pepwrt or another program)");
    // Not running: something else holds them.
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(
        &log,
        "queue or port taken by another program, not starting: NFQUEUE 3135: in use; transparent listener on port 3135",
    );
    r.set("STUB_RUNNING", "1");
    let (ok, log) = r.run("reload");
    assert!(ok, "{log:#?}");
    assert!(command_line(&log).is_some(), "{log:#?}");
}

#[test]
fn init_nft_rejecting_rules_does_not_start() {
    let mut r = Router::new(&config("", ""), true);
    r.set("STUB_NFT_REJECT", "1");
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(&log, "nft rejected the generated rules");
    assert!(
        !r.path("var/etc/pepwrt/pepwrt.nft").exists(),
        "a rejected file must not reach fw4's include path"
    );
}

#[test]
fn uci_defaults_registers_fw3_include_only_without_fw4() {
    need_tool("busybox", "busybox");
    let script =
        std::fs::read_to_string(repo().join("openwrt/pepwrt/files/pepwrt.uci-defaults")).unwrap();
    assert!(script.contains("if [ ! -x /sbin/fw4 ]"));
    // Sourced by default_postinst in a subshell that deletes it after;
    // an exit would skip that on opkg-era releases.
    assert!(
        !script
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("exit")),
        "{script}"
    );
    for line in [
        "set firewall.pepwrt=include",
        "set firewall.pepwrt.type=script",
        "set firewall.pepwrt.path=/usr/share/pepwrt/firewall.include",
        "set firewall.pepwrt.reload=1",
        "commit firewall",
    ] {
        assert!(script.contains(line), "{line}");
    }
    let nft = std::fs::read_to_string(repo().join("openwrt/pepwrt/files/pepwrt.nft")).unwrap();
    assert!(nft.contains("include \"/var/etc/pepwrt/*.nft\""));
}

/// Makes the router's `ip` a busybox one: its banner when called bare, and
/// no route metrics.
fn busybox_ip(r: &Router) {
    let ip = r.path("bin/ip");
    std::fs::remove_file(&ip).unwrap();
    std::fs::write(
        &ip,
        "#!/bin/sh\n[ $# -gt 0 ] || { echo 'BusyBox v1.36.1 (2024-09-23) multi-call binary.'; exit 1; }\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o755)).unwrap();
}
