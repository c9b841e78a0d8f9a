//! .ipk: the archive byte by byte, then opkg of a real OpenWrt 18.06 root.

use super::*;

struct Entry {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    is_dir: bool,
    data: Vec<u8>,
}

/// Reads a .tar.gz into path -> entry, in archive order as well.
fn read_tgz(bytes: &[u8]) -> (Vec<String>, BTreeMap<String, Entry>) {
    let mut raw = Vec::new();
    flate2_free_gunzip(bytes, &mut raw);
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    let mut off = 0;
    let mut long_name: Option<String> = None;
    while off + 512 <= raw.len() {
        let h = &raw[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let s = &h[a..b];
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).trim().to_string()
        };
        let octal = |a: usize, b: usize| u64::from_str_radix(&field(a, b), 8).unwrap_or(0);
        let size = octal(124, 136) as usize;
        let typeflag = h[156];
        let body = raw[off + 512..off + 512 + size].to_vec();
        off += 512 + size.div_ceil(512) * 512;
        if typeflag == b'L' {
            let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
            long_name = Some(String::from_utf8_lossy(&body[..end]).to_string());
            continue;
        }
        let mut name = long_name.take().unwrap_or_else(|| field(0, 100));
        let prefix = field(345, 500);
        if !prefix.is_empty() && h[257..262] == *b"ustar" && &h[257..265] != b"ustar  \0" {
            name = format!("{prefix}/{name}");
        }
        order.push(name.clone());
        map.insert(
            name,
            Entry {
                mode: octal(100, 108) as u32,
                uid: octal(108, 116),
                gid: octal(116, 124),
                mtime: octal(136, 148),
                is_dir: typeflag == b'5',
                data: body,
            },
        );
    }
    (order, map)
}

/// gunzip through the system's gzip: no extra crates in the workspace.
fn flate2_free_gunzip(bytes: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("gzip")
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip not found (apt-get install gzip)");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    child.stdout.take().unwrap().read_to_end(out).unwrap();
    writer.join().unwrap().expect("feeding gzip");
    assert!(
        child.wait().unwrap().success(),
        "gzip -d failed: not gzip data"
    );
}

struct Ipk {
    outer: Vec<String>,
    control: BTreeMap<String, Entry>,
    data: BTreeMap<String, Entry>,
}

fn open_ipk(path: &Path) -> Ipk {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..2],
        &[0x1f, 0x8b],
        "{}: not gzip (an ar .ipk?)",
        path.display()
    );
    let (outer, members) = read_tgz(&bytes);
    assert_eq!(
        outer,
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"],
        "{}: outer members",
        path.display()
    );
    assert_eq!(members["./debian-binary"].data, b"2.0\n");
    let (_, control) = read_tgz(&members["./control.tar.gz"].data);
    let (_, data) = read_tgz(&members["./data.tar.gz"].data);
    for (name, e) in members.iter().chain(control.iter()).chain(data.iter()) {
        assert_eq!((e.uid, e.gid), (0, 0), "{name}: owner must be root:root");
        assert_eq!(
            e.mtime, 1700000000,
            "{name}: mtime must be SOURCE_DATE_EPOCH"
        );
    }
    Ipk {
        outer,
        control,
        data,
    }
}

fn text(e: &Entry) -> String {
    String::from_utf8(e.data.clone()).expect("utf-8")
}

fn control_fields(ipk: &Ipk) -> BTreeMap<String, String> {
    let control = text(&ipk.control["./control"]);
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in control.lines() {
        if let Some(cont) = line.strip_prefix(' ') {
            let v: &mut String = fields.get_mut(&last).expect("continuation first");
            v.push('\n');
            v.push_str(cont);
        } else {
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            last = k.to_string();
            fields.insert(last.clone(), v.to_string());
        }
    }
    fields
}

/// ELF e_machine and data encoding (1 little, 2 big) expected per arch.

#[test]
fn pepwrt_ipk_per_arch() {
    let dist = dist();
    let v = version();
    for arch in archs() {
        let path = dist.join(format!("pepwrt_{v}-r1_{arch}.ipk"));
        let ipk = open_ipk(&path);
        assert_eq!(ipk.outer.len(), 3);
        let f = control_fields(&ipk);
        assert_eq!(f["Package"], "pepwrt");
        assert_eq!(f["Version"], format!("{v}-r1"));
        assert_eq!(f["Architecture"], arch);
        assert_eq!(f["Section"], "net");
        assert_eq!(f["License"], "GPL-2.0-only");
        assert!(f.contains_key("Source"));
        assert!(f["Description"].contains("split-TCP"));
        for dep in [
            "kmod-nft-queue | iptables-mod-nfqueue",
            "kmod-nft-tproxy | iptables-mod-tproxy",
            "kmod-nft-socket | iptables-mod-socket",
            "kmod-nf-conntrack-netlink",
            "kmod-tcp-bbr",
        ] {
            assert!(
                f["Depends"].contains(dep),
                "Depends lacks {dep}: {}",
                f["Depends"]
            );
        }
        let files: u64 = ipk
            .data
            .values()
            .filter(|e| !e.is_dir)
            .map(|e| e.data.len() as u64)
            .sum();
        assert_eq!(f["Installed-Size"], files.to_string());

        assert_eq!(text(&ipk.control["./conffiles"]), "/etc/config/pepwrt\n");
        for script in ["./postinst", "./prerm"] {
            let e = &ipk.control[script];
            assert_eq!(e.mode & 0o777, 0o755, "{script} mode");
            assert!(text(e).starts_with("#!/bin/sh\n"));
        }
        assert!(text(&ipk.control["./postinst"]).contains("default_postinst \"$0\" \"$@\""));
        assert!(text(&ipk.control["./prerm"]).contains("default_prerm \"$0\" \"$@\""));
        assert!(text(&ipk.control["./prerm-pkg"]).contains("uci -q delete firewall.pepwrt"));

        let want: &[(&str, u32)] = &[
            ("./usr/sbin/pepwrt", 0o755),
            ("./etc/config/pepwrt", 0o600),
            ("./etc/init.d/pepwrt", 0o755),
            ("./etc/uci-defaults/90-pepwrt", 0o755),
            ("./etc/capabilities/pepwrt.json", 0o644),
            ("./usr/share/pepwrt/firewall.include", 0o755),
            ("./usr/share/nftables.d/ruleset-post/pepwrt.nft", 0o644),
        ];
        let regular: Vec<&String> = ipk
            .data
            .iter()
            .filter(|(_, e)| !e.is_dir)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(regular.len(), want.len(), "data files: {regular:?}");
        for (name, mode) in want {
            let e = ipk
                .data
                .get(*name)
                .unwrap_or_else(|| panic!("{arch}: {name} missing"));
            assert_eq!(e.mode & 0o7777, *mode, "{arch}: {name} mode {:o}", e.mode);
        }
        for (name, e) in &ipk.data {
            if e.is_dir {
                assert_eq!(e.mode & 0o7777, 0o755, "{name}");
            }
        }
        let repo_file = |p: &str| std::fs::read(repo().join(p)).unwrap();
        assert_eq!(
            ipk.data["./etc/config/pepwrt"].data,
            repo_file("openwrt/pepwrt/files/pepwrt.config")
        );
        assert_eq!(
            String::from_utf8(ipk.data["./etc/init.d/pepwrt"].data.clone()).unwrap(),
            without_comments(&repo_file("openwrt/pepwrt/files/pepwrt.init"))
        );
        let bin = &ipk.data["./usr/sbin/pepwrt"].data;
        check_elf(&arch, bin);
        if arch.starts_with("mips") {
            // As cross/build's budget.
            assert!(
                bin.len() <= 345 * 1024,
                "{arch}: {} bytes, over the 345 KB budget",
                bin.len()
            );
        }
        let ipk_len = std::fs::metadata(&path).unwrap().len();
        if arch == "mips_24kc" {
            // The goal (issue 20): an ipk of at most 170 KB for the
            // routers with the least flash.
            assert!(
                ipk_len <= 170 * 1024,
                "{arch}: ipk {ipk_len} bytes, over the 170 KB goal"
            );
        }
        eprintln!("{arch}: binary {} bytes, ipk {ipk_len} bytes", bin.len());
    }
}

#[test]
fn luci_ipk() {
    let luci = repo().join("openwrt/luci-app-pepwrt");
    if !luci.exists() {
        // build-ipk packs it only when the directory exists; nothing to check.
        assert!(
            !dist()
                .join(format!("luci-app-pepwrt_{}-r1_all.ipk", version()))
                .exists()
        );
        return;
    }
    let ipk = open_ipk(&dist().join(format!("luci-app-pepwrt_{}-r1_all.ipk", version())));
    let f = control_fields(&ipk);
    assert_eq!(f["Package"], "luci-app-pepwrt");
    assert_eq!(f["Architecture"], "all");
    assert_eq!(f["Depends"], "luci-base, pepwrt");
    let post = text(&ipk.control["./postinst-pkg"]);
    assert!(post.contains("/etc/init.d/rpcd reload"), "{post}");
    assert!(post.contains("rm -f /tmp/luci-indexcache*"), "{post}");
    assert!(text(&ipk.control["./postinst"]).contains("default_postinst"));
    // Every file of htdocs/ under /www and of root/ under /, same bytes.
    let mut expected = 0;
    for (tree, prefix) in [("htdocs", "./www/"), ("root", "./")] {
        let base = luci.join(tree);
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for ent in std::fs::read_dir(&dir).unwrap() {
                let p = ent.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(&base).unwrap().to_str().unwrap().to_string();
                let name = format!("{prefix}{rel}");
                let e = ipk
                    .data
                    .get(&name)
                    .unwrap_or_else(|| panic!("{name} missing"));
                assert_eq!(e.data, std::fs::read(&p).unwrap(), "{name}");
                use std::os::unix::fs::PermissionsExt;
                let exec = std::fs::metadata(&p).unwrap().permissions().mode() & 0o111 != 0;
                assert_eq!(e.mode & 0o777, if exec { 0o755 } else { 0o644 }, "{name}");
                expected += 1;
            }
        }
    }
    assert_eq!(ipk.data.values().filter(|e| !e.is_dir).count(), expected);
}

#[test]
fn ipks_are_reproducible() {
    assert_reproducible("ipk");
}

/// The init script as build-packages ships it: the #! line, the licence
/// line and a pointer to the source, then every line that is not a
/// comment.
fn without_comments(source: &[u8]) -> String {
    let text = String::from_utf8(source.to_vec()).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 || !line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else if line.contains("SPDX-License-Identifier") {
            out.push_str(line);
            out.push_str("\n# Commented source: openwrt/pepwrt/files/pepwrt.init in pepwrt.\n");
        }
    }
    out
}

fn ipk_path(name: &str, arch: &str) -> PathBuf {
    dist().join(format!("{name}_{}-r1_{arch}.ipk", version()))
}

/// The procd service description PROCD_DEBUG printed, `\/` unescaped.
fn procd_json(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("{ \"name\": \"pepwrt\""))
        .unwrap_or_else(|| panic!("no procd JSON in:\n{output}"))
        .replace("\\/", "/")
}

/// A root where the x86_64 ipk is installed with opkg. Its kernel-module
/// dependencies are not packages here, hence --force-depends.
/// None (a loud skip) without the OpenWrt root.
fn openwrt_with_pepwrt(tag: &str) -> Option<(OpenWrtRoot, String)> {
    assert!(
        archs().iter().any(|a| a == "x86_64"),
        "the OpenWrt root runs the x86_64 package: keep x86_64 in PEPWRT_ARCHS"
    );
    let ow = OpenWrtRoot::new(tag)?;
    let ipk = ow.put(&ipk_path("pepwrt", "x86_64"));
    let log = ow.must(&format!("opkg install --force-depends {ipk} 2>&1"));
    Some((ow, log))
}

#[test]
fn ipk_installs_starts_stops_and_removes_in_openwrt_18_06() {
    let Some((ow, log)) = openwrt_with_pepwrt("owrt-life") else {
        return;
    };
    assert!(
        log.contains(&format!("Installing pepwrt ({}-r1) to root", version())),
        "{log}"
    );
    assert!(log.contains("Configuring pepwrt."), "{log}");
    // default_postinst: uci-defaults ran (fw3 here: the include is
    // registered) and was deleted, the service enabled and started,
    // which with the shipped config only says it is disabled.
    assert_eq!(
        ow.uci("firewall.pepwrt.path"),
        "/usr/share/pepwrt/firewall.include"
    );
    assert_eq!(ow.uci("firewall.pepwrt.reload"), "1");
    assert!(
        !ow.path("etc/uci-defaults/90-pepwrt").exists(),
        "uci-defaults left behind"
    );
    for link in ["etc/rc.d/S95pepwrt", "etc/rc.d/K10pepwrt"] {
        assert_eq!(
            std::fs::read_link(ow.path(link)).unwrap(),
            Path::new("../init.d/pepwrt"),
            "{link}"
        );
    }
    assert!(
        !procd_json(&log).contains("\"command\""),
        "disabled must start nothing: {log}"
    );

    // Enabled, with this root's iptables (its TPROXY, socket and NFQUEUE
    // modules are separate packages, not installed): `check` dry-runs the
    // rules and names the packages; nothing installed.
    ow.must(
        "uci set pepwrt.main.enabled=1; uci set pepwrt.main.server_cc=cubic; uci commit pepwrt",
    );
    ow.must("mkdir -p /tmp/run"); // /var/run, for xtables' lock
    let out = ow.must("/etc/init.d/pepwrt start");
    for package in ["iptables-mod-nfqueue", "iptables-mod-tproxy"] {
        assert!(
            out.contains("kernel support missing") && out.contains(package),
            "{package}: {out}"
        );
    }
    assert!(!procd_json(&out).contains("\"command\""), "{out}");

    // With those modules (stand-ins for iptables-restore), busybox 1.28's
    // ip: refused by name, nothing installed.
    let restore = ow.shim_only(&["iptables-restore", "ip6tables-restore"]);
    let out = ow.must(&format!("{restore} /etc/init.d/pepwrt start"));
    assert!(
        out.contains("this system's ip (BusyBox v1.28) rejects 'fwmark VALUE/MASK'; pepwrt needs OpenWrt 21.02 or newer, or the ip-full package"),
        "{out}"
    );
    assert!(!procd_json(&out).contains("\"command\""), "{out}");
    assert!(
        !ow.path("tmp/etc/pepwrt").exists(),
        "rules state left after a refused start"
    );

    // With an ip that takes masks and an iptables with the TPROXY, socket
    // and NFQUEUE modules (neither is in this root: stand-ins that record
    // their calls), start hands procd the daemon and its triggers.
    let shim = ow.shim();
    let out = ow.must(&format!("{shim} /etc/init.d/pepwrt start"));
    let json = procd_json(&out);
    for want in [
        "\"command\": [ \"/usr/sbin/pepwrt\", \"run\", \"--log-level\", \"info\", \"--intercept\", \"br-lan\", \"--exclude-port\", \"22\"",
        "\"--server-cc\", \"cubic\"",
        "\"--table\", \"313\", \"--user\", \"nobody\" ]",
        "\"respawn\": [ \"3600\", \"5\", \"5\" ]",
        "\"stderr\": true",
        "\"limits\": { \"nofile\": \"832 832\" }",
        "[ \"config.change\", [ \"if\", [ \"eq\", \"package\", \"pepwrt\" ], [ \"run_script\", \"/etc/init.d/pepwrt\", \"reload\" ] ], 1000 ]",
        "[ \"interface.*.up\", [ \"if\", [ \"eq\", \"interface\", \"wan\" ], [ \"run_script\", \"/etc/init.d/pepwrt\", \"reload\" ] ], 1000 ]",
        "[ \"interface.*.up\", [ \"if\", [ \"eq\", \"interface\", \"lan\" ], [ \"run_script\", \"/etc/init.d/pepwrt\", \"reload\" ] ], 1000 ]",
    ] {
        assert!(json.contains(want), "missing {want} in {json}");
    }
    let calls = std::fs::read_to_string(ow.path("tmp/shim.log")).unwrap();
    assert!(
        calls.contains("iptables '-w' '-t' 'mangle' '-I' 'PREROUTING' '-j' 'PEPWRT'"),
        "{calls}"
    );
    assert!(
        calls.contains("ip 'rule' 'add' 'fwmark' '0x10000/0x10000' 'lookup' '313'"),
        "{calls}"
    );
    assert!(ow.path("tmp/etc/pepwrt/firewall.sh").exists());

    let out = ow.must(&format!("{shim} /etc/init.d/pepwrt stop"));
    assert!(
        !ow.path("tmp/etc/pepwrt").exists(),
        "state left after stop: {out}"
    );
    let calls = std::fs::read_to_string(ow.path("tmp/shim.log")).unwrap();
    assert!(
        calls.contains("iptables '-w' '-t' 'mangle' '-X' 'PEPWRT'"),
        "{calls}"
    );

    // Removal: prerm's default_prerm stops and disables the service, and
    // the package's own step drops the fw3 include.
    let log = ow.must("opkg remove pepwrt 2>&1");
    assert!(log.contains("Removing package pepwrt"), "{log}");
    assert_eq!(ow.uci("firewall.pepwrt"), "");
    for gone in [
        "usr/sbin/pepwrt",
        "etc/init.d/pepwrt",
        "etc/rc.d/S95pepwrt",
        "etc/rc.d/K10pepwrt",
        "tmp/etc/pepwrt",
    ] {
        assert!(!ow.path(gone).exists(), "{gone} left after opkg remove");
    }
}

#[test]
fn ipk_upgrade_keeps_an_edited_config_in_openwrt_18_06() {
    let Some((ow, _)) = openwrt_with_pepwrt("owrt-upgrade") else {
        return;
    };
    ow.must("uci set pepwrt.main.max_conns=500; uci add_list pepwrt.main.exclude_port=853; uci commit pepwrt");
    let r2 = dist_r2("ipk", "x86_64").join(format!("pepwrt_{}-r2_x86_64.ipk", version()));
    let ipk = ow.put(&r2);
    let log = ow.must(&format!("opkg install --force-depends {ipk} 2>&1"));
    assert!(
        log.contains(&format!(
            "Upgrading pepwrt on root from {v}-r1 to {v}-r2",
            v = version()
        )),
        "{log}"
    );
    assert_eq!(ow.uci("pepwrt.main.max_conns"), "500", "{log}");
    assert_eq!(ow.uci("pepwrt.main.exclude_port"), "22 853");
    let status = std::fs::read_to_string(ow.path("usr/lib/opkg/status")).unwrap();
    assert!(
        status.contains(&format!("Package: pepwrt\nVersion: {}-r2", version())),
        "{status}"
    );
    // Still enabled after the upgrade.
    assert!(ow.path("etc/rc.d/S95pepwrt").exists());
}

#[test]
fn luci_ipk_installs_in_openwrt_18_06() {
    let Some((ow, _)) = openwrt_with_pepwrt("owrt-luci") else {
        return;
    };
    let ipk = ow.put(&ipk_path("luci-app-pepwrt", "all"));
    let log = ow.must(&format!("opkg install --force-depends {ipk} 2>&1"));
    assert!(log.contains("Configuring luci-app-pepwrt."), "{log}");
    for f in [
        "www/luci-static/resources/view/pepwrt/config.js",
        "www/luci-static/resources/view/pepwrt/status.js",
        "usr/share/rpcd/acl.d/luci-app-pepwrt.json",
        "usr/share/luci/menu.d/luci-app-pepwrt.json",
        "usr/libexec/rpcd/luci.pepwrt",
    ] {
        assert!(ow.path(f).exists(), "{f} missing: {log}");
    }
    let log = ow.must("opkg remove luci-app-pepwrt 2>&1");
    assert!(
        !ow.path("www/luci-static/resources/view/pepwrt/config.js")
            .exists(),
        "{log}"
    );
}

#[test]
fn init_reads_uci_lists_and_refuses_bad_values_in_openwrt_18_06() {
    // The real /lib/functions.sh and uci: lists become repeated flags.
    let Some((ow, _)) = openwrt_with_pepwrt("owrt-uci") else {
        return;
    };
    ow.must(
        "uci set pepwrt.main.enabled=1; uci set pepwrt.main.server_cc=cubic; \
         uci add_list pepwrt.main.intercept=198.18.2.0/24; uci add_list pepwrt.main.exclude_port=853; \
         uci set pepwrt.snoop.enabled=1; uci add_list pepwrt.snoop.target=wlan0; uci commit pepwrt",
    );
    let out = ow.must(&format!("{} /etc/init.d/pepwrt start", ow.shim()));
    let json = procd_json(&out);
    for want in [
        "\"--intercept\", \"br-lan\", \"--intercept\", \"198.18.2.0/24\", \"--exclude-port\", \"22\", \"--exclude-port\", \"853\"",
        "\"--snoop\", \"wlan0\"",
    ] {
        assert!(json.contains(want), "missing {want} in {json}\n{out}");
    }
    ow.must(&format!("{} /etc/init.d/pepwrt stop", ow.shim()));

    // A bad value: refused by `pepwrt check` before anything is installed.
    ow.must("uci set pepwrt.main.buffer_size=3x; uci commit pepwrt; rm -f /tmp/shim.log");
    let out = ow.must(&format!("{} /etc/init.d/pepwrt start", ow.shim()));
    assert!(
        out.contains(
            "bad configuration in /etc/config/pepwrt, not starting: --buffer: '3x' is not a size"
        ),
        "{out}"
    );
    assert!(!procd_json(&out).contains("\"command\""), "{out}");
    let calls = std::fs::read_to_string(ow.path("tmp/shim.log")).unwrap_or_default();
    assert!(
        !calls.contains("'-I'") && !calls.contains("'add'"),
        "rules installed anyway: {calls}"
    );
}
