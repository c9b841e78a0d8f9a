//! The OpenWrt packages: `openwrt/build-packages` output in both formats.
//!
//! - .ipk: checked byte by byte (archive layout, control fields, modes, the
//!   binary's ELF architecture), then installed, started, upgraded and
//!   removed by the real opkg of an OpenWrt 18.06 root in a chroot inside
//!   a network namespace of the test's own, with real uci, /etc/rc.common,
//!   /lib/functions.sh, procd.sh (PROCD_DEBUG=1 prints what would go to
//!   procd) and busybox ash.
//! - .apk: read by the real `apk adbdump` (apk-tools 3.0.6), installed into
//!   an empty root by `apk add --root`, upgraded over an edited config and
//!   removed. The empty root has no shell, so apk runs there with
//!   --no-scripts; the scripts are checked as text (they call 25.12's
//!   /lib/functions.sh, which is not here).
//! - The init script also runs against the stand-ins in openwrt/lib/stubs
//!   for fw4 and for cases the old root cannot show (fw4 and ucode exist
//!   nowhere here; the 18.06 root has fw3, busybox 1.28's ip and an
//!   iptables without the TPROXY/socket/NFQUEUE modules).
//!
//! Needs (installed by .ci/run): busybox, shellcheck, GNU tar, gzip, what
//! cross/build needs, and `<repo>/../shared/tools` (apk and the OpenWrt
//! root; CI has it there). The archs packaged are mips_24kc,
//! arm_cortex-a7_neon-vfpv4 and x86_64 unless PEPWRT_ARCHS says otherwise
//! (`all`, or names); x86_64 is the one run in the OpenWrt root.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{TempDir, repo, run_with_progress, shared_tools, target_dir};

fn archs() -> Vec<String> {
    common::test_archs()
}

fn need_tool(name: &str, apt: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: install it (apt-get install {apt})"
    );
}

/// Scratch space for built packages, under cargo's target directory.
fn scratch(name: &str) -> PathBuf {
    target_dir().join("package-test").join(name)
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Runs build-packages (both formats) once per test binary, into its own
/// dist directory; cross/build's progress shows on stderr as it goes.
fn dist() -> &'static Path {
    static DIST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DIST.get_or_init(|| {
        let dist = scratch("dist");
        let _ = std::fs::remove_dir_all(&dist);
        let report = run_with_progress(
            Command::new(repo().join("openwrt/build-packages"))
                .args(archs())
                .env("PEPWRT_DIST", &dist)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        )?;
        eprintln!("{report}");
        Ok(dist)
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The same packages with another release number (r2), for upgrades.
fn dist_r2(format: &str, arch: &str) -> PathBuf {
    dist();
    let out = scratch(&format!("dist-r2-{format}-{arch}"));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(repo().join(format!("openwrt/build-{format}")))
        .args(["--no-build", arch])
        .env("PEPWRT_DIST", &out)
        .env("PEPWRT_RELEASE", "r2")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

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
fn elf_expect(arch: &str) -> (u16, u8, u8) {
    // (e_machine, EI_CLASS 1=32/2=64, EI_DATA)
    match arch {
        "mips_24kc" => (8, 1, 2),
        "mipsel_24kc" => (8, 1, 1),
        "arm_cortex-a7_neon-vfpv4" => (40, 1, 1),
        "aarch64_cortex-a53" => (183, 2, 1),
        "x86_64" => (62, 2, 1),
        _ => panic!("unknown arch {arch}"),
    }
}

fn check_elf(arch: &str, bin: &[u8]) {
    assert_eq!(&bin[..4], b"\x7fELF", "{arch}: not ELF");
    let (machine, class, data) = elf_expect(arch);
    assert_eq!(bin[4], class, "{arch}: ELF class");
    assert_eq!(bin[5], data, "{arch}: byte order");
    let u16_at = |o: usize| {
        let b = [bin[o], bin[o + 1]];
        if data == 2 {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |o: usize| {
        let b = [bin[o], bin[o + 1], bin[o + 2], bin[o + 3]];
        if data == 2 {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bin[o..o + 8]);
        if data == 2 {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    };
    assert_eq!(u16_at(18), machine, "{arch}: e_machine");
    // A table's offset, entry size and count, read at the given header
    // positions for ELF32 and for ELF64 (the offset is a word of the
    // class's size).
    let table = |elf32: [usize; 3], elf64: [usize; 3]| {
        let [off, size, count] = if class == 1 { elf32 } else { elf64 };
        let start = if class == 1 {
            u32_at(off) as usize
        } else {
            u64_at(off) as usize
        };
        (start, u16_at(size) as usize, u16_at(count) as usize)
    };
    // Static: no PT_INTERP program header (no dynamic loader needed).
    let (phoff, phentsize, phnum) = table([28, 42, 44], [32, 54, 56]);
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize);
        assert_ne!(p_type, 3, "{arch}: has PT_INTERP, so it is not static");
    }
    // Stripped: no .symtab section.
    let (shoff, shentsize, shnum) = table([32, 46, 48], [40, 58, 60]);
    for i in 0..shnum {
        let sh_type = u32_at(shoff + i * shentsize + 4);
        assert_ne!(sh_type, 2, "{arch}: has SHT_SYMTAB, so it is not stripped");
    }
}

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
            ipk.data["./etc/init.d/pepwrt"].data,
            repo_file("openwrt/pepwrt/files/pepwrt.init")
        );
        let bin = &ipk.data["./usr/sbin/pepwrt"].data;
        check_elf(&arch, bin);
        if arch.starts_with("mips") {
            assert!(
                bin.len() <= 420 * 1024,
                "{arch}: {} bytes, over the 420 KB budget",
                bin.len()
            );
        }
        eprintln!(
            "{arch}: binary {} bytes, ipk {} bytes",
            bin.len(),
            std::fs::metadata(&path).unwrap().len()
        );
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
    // A second run with the same SOURCE_DATE_EPOCH gives the same bytes.
    let first = dist();
    let arch = archs()[0].clone();
    let name = format!("pepwrt_{}-r1_{arch}.ipk", version());
    let again = scratch("dist-again");
    let _ = std::fs::remove_dir_all(&again);
    let out = Command::new(repo().join("openwrt/build-ipk"))
        .args(["--no-build", &arch])
        .env("PEPWRT_DIST", &again)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(first.join(&name)).unwrap(),
        std::fs::read(again.join(&name)).unwrap(),
        "{name} differs between two builds"
    );
}

// ---- shell scripts -------------------------------------------------------

const SCRIPTS: &[&str] = &[
    "openwrt/pepwrt/files/pepwrt.init",
    "openwrt/pepwrt/files/pepwrt.uci-defaults",
    "openwrt/pepwrt/files/firewall.include",
    "openwrt/lib/stubs/functions.sh",
    "openwrt/lib/stubs/procd.sh",
    "openwrt/lib/stubs/rc.common",
    "openwrt/lib/stubs/record",
    "openwrt/lib/stubs/pepwrt",
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
    fn new(config: &str, fw4: bool) -> Router {
        need_tool("busybox", "busybox");
        let dir = TempDir::new("router");
        let d = &dir.0;
        let stubs = repo().join("openwrt/lib/stubs");
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
                 IPT_RULES=$STATE_DIR/firewall.sh\nFW4={d}/fw4\n",
                d = d.display()
            ),
        )
        .unwrap();
        let log = d.join("log");
        std::fs::write(&log, "").unwrap();
        let mut cmd = Command::new("busybox");
        cmd.arg("sh")
            .arg(repo().join("openwrt/lib/stubs/rc.common"))
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
        "procd_set_param 'limits' 'nofile=320 320'",
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
    // Validated before anything is installed, with the same flags.
    let check = log
        .iter()
        .position(|l| l.starts_with("pepwrt 'check' "))
        .expect("no check");
    assert_eq!(
        log[check],
        format!("pepwrt 'check' {}", quoted(DEFAULT_FLAGS))
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
                \tlist exclude_port '853'\n\toption log_level 'debug'\n";
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
        "wlan0",
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
}

#[test]
fn init_max_conns_sets_nofile() {
    let r = Router::new(&config("\toption max_conns '1000'\n", ""), true);
    let (ok, log) = r.run("start");
    assert!(ok);
    assert!(
        log.iter()
            .any(|l| l == "procd_set_param 'limits' 'nofile=2064 2064'"),
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
    r.set("CHECK_EXIT", "3");
    r.set("CHECK_OUT", "ok      congestion control\nMISSING TPROXY: install kmod-nft-tproxy (fw4) or kmod-ipt-tproxy (fw3)");
    let (ok, log) = r.run("start");
    assert!(!ok);
    assert_refused(
        &log,
        "kernel support missing, not starting: TPROXY: install kmod-nft-tproxy",
    );
}

#[test]
fn init_reload_while_running_tolerates_its_own_queue_and_port() {
    let mut r = Router::new(&config("", ""), true);
    r.set("CHECK_EXIT", "1");
    r.set(
        "CHECK_OUT",
        "ok      congestion control\nBUSY    NFQUEUE 3135: in use\nBUSY    transparent listener on port 3135: in use (by a running pepwrt or another program)",
    );
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

/// shellcheck with sourced files followed; files without a #!/bin/sh line
/// name their dialect in a directive.
fn shellcheck(script: &str) {
    let out = Command::new("shellcheck")
        .arg("-x")
        .arg(script)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck {script}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---- .apk with the real apk-tools 3 ----------------------------------------

fn apk() -> PathBuf {
    shared_tools().join("apk")
}

/// Runs apk; fails the test with its output when it fails.
fn run_apk(args: &[&str]) -> String {
    let out = Command::new(apk()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "apk {args:?} failed:\n{text}");
    text
}

/// What `apk adbdump` shows of a package: the info fields, each file's
/// mode and owner, and the scripts.
struct ApkDump {
    info: BTreeMap<String, String>,
    depends: Vec<String>,
    files: BTreeMap<String, (String, String)>,
    scripts: BTreeMap<String, String>,
}

fn adbdump(path: &Path) -> ApkDump {
    let text = run_apk(&["adbdump", path.to_str().unwrap()]);
    let mut d = ApkDump {
        info: BTreeMap::new(),
        depends: Vec::new(),
        files: BTreeMap::new(),
        scripts: BTreeMap::new(),
    };
    let (mut section, mut dir, mut file) = (String::new(), String::new(), None::<String>);
    let mut last_key = String::new();
    let mut script: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line.split(':').next().unwrap_or("").to_string();
            continue;
        }
        match section.as_str() {
            "info" => {
                if let Some(dep) = line.strip_prefix("    - ") {
                    d.depends.push(dep.to_string());
                } else if let Some((k, v)) = line.trim_start().split_once(": ") {
                    last_key = k.to_string();
                    d.info
                        .insert(k.to_string(), v.trim_end_matches('|').to_string());
                } else if let Some(v) = d.info.get_mut(&last_key) {
                    // a `|` value continues on the indented lines after it
                    v.push_str(line.trim());
                }
            }
            "paths" => {
                if line == "  - acl:" {
                    dir.clear();
                    file = None;
                } else if let Some(n) = line.strip_prefix("  - name: ") {
                    dir = n.to_string();
                    file = None;
                } else if let Some(n) = line.strip_prefix("      - name: ") {
                    let f = if dir.is_empty() {
                        n.to_string()
                    } else {
                        format!("{dir}/{n}")
                    };
                    d.files.insert(f.clone(), (String::new(), String::new()));
                    file = Some(f);
                } else if let (Some(f), Some(m)) = (&file, line.strip_prefix("          mode: ")) {
                    d.files.get_mut(f).unwrap().0 = m.to_string();
                } else if let (Some(f), Some(u)) = (&file, line.strip_prefix("          user: ")) {
                    d.files.get_mut(f).unwrap().1 = u.to_string();
                }
            }
            "scripts" => {
                if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
                    script = Some(name.to_string());
                    d.scripts.insert(name.to_string(), String::new());
                } else if let (Some(n), Some(l)) = (&script, line.strip_prefix("    ")) {
                    let body = d.scripts.get_mut(n).unwrap();
                    body.push_str(l);
                    body.push('\n');
                }
            }
            _ => {}
        }
    }
    d
}

const PEPWRT_FILES: &[(&str, &str)] = &[
    ("usr/sbin/pepwrt", "0755"),
    ("etc/config/pepwrt", "0600"),
    ("etc/init.d/pepwrt", "0755"),
    ("etc/uci-defaults/90-pepwrt", "0755"),
    ("etc/capabilities/pepwrt.json", "0644"),
    ("usr/share/pepwrt/firewall.include", "0755"),
    ("usr/share/nftables.d/ruleset-post/pepwrt.nft", "0644"),
    ("lib/apk/packages/pepwrt.list", "0644"),
    ("lib/apk/packages/pepwrt.conffiles", "0644"),
    ("lib/apk/packages/pepwrt.conffiles_static", "0644"),
];

fn apk_path(name: &str, arch: &str) -> PathBuf {
    dist().join(format!("{name}_{}-r1_{arch}.apk", version()))
}

#[test]
fn pepwrt_apk_per_arch() {
    for arch in archs() {
        let path = apk_path("pepwrt", &arch);
        let d = adbdump(&path);
        assert_eq!(d.info["name"], "pepwrt");
        assert_eq!(d.info["version"], format!("{}-r1", version()));
        assert_eq!(d.info["arch"], arch);
        assert_eq!(d.info["license"], "GPL-2.0-only");
        assert_eq!(d.info["origin"], "openwrt/pepwrt");
        assert!(d.info["description"].contains("split-TCP"), "{:?}", d.info);
        // OpenWrt 25.12 is fw4-only: the nft modules, no alternatives.
        assert_eq!(
            d.depends,
            [
                "kmod-nf-conntrack-netlink",
                "kmod-nft-queue",
                "kmod-nft-socket",
                "kmod-nft-tproxy",
                "kmod-tcp-bbr"
            ]
        );
        let names: Vec<&String> = d.files.keys().collect();
        assert_eq!(d.files.len(), PEPWRT_FILES.len(), "files: {names:?}");
        for (f, mode) in PEPWRT_FILES {
            let (m, user) = d
                .files
                .get(*f)
                .unwrap_or_else(|| panic!("{arch}: {f} missing from {names:?}"));
            assert_eq!((m.as_str(), user.as_str()), (*mode, "root"), "{arch}: {f}");
        }
        // The scripts OpenWrt's build generates, with the package's own
        // removal step appended to pre-deinstall.
        let post = &d.scripts["post-install"];
        assert!(post.starts_with("#!/bin/sh\n"), "{post}");
        assert!(post.contains("export pkgname=\"pepwrt\"\n"), "{post}");
        assert!(
            post.contains("\nadd_group_and_user\ndefault_postinst\n"),
            "{post}"
        );
        let upgrade = &d.scripts["post-upgrade"];
        assert!(
            upgrade.starts_with("#!/bin/sh\nexport PKG_UPGRADE=1\n"),
            "{upgrade}"
        );
        assert!(upgrade.contains("default_postinst"), "{upgrade}");
        let pre = &d.scripts["pre-deinstall"];
        assert!(
            pre.contains("export pkgname=\"pepwrt\"\ndefault_prerm\n"),
            "{pre}"
        );
        assert!(pre.contains("uci -q delete firewall.pepwrt"), "{pre}");
        assert_eq!(pre.matches("#!").count(), 1, "{pre}");
        eprintln!(
            "{arch}: apk {} bytes",
            std::fs::metadata(&path).unwrap().len()
        );
    }
}

#[test]
fn luci_apk() {
    let d = adbdump(&apk_path("luci-app-pepwrt", "all"));
    assert_eq!(d.info["name"], "luci-app-pepwrt");
    assert_eq!(d.info["arch"], "noarch");
    assert_eq!(d.depends, ["luci-base", "pepwrt"]);
    let post = &d.scripts["post-install"];
    assert!(post.contains("default_postinst\n"), "{post}");
    assert!(post.contains("/etc/init.d/rpcd reload"), "{post}");
    assert!(
        d.files
            .contains_key("www/luci-static/resources/view/pepwrt/config.js")
    );
    assert!(
        d.files
            .contains_key("usr/share/rpcd/acl.d/luci-app-pepwrt.json")
    );
    assert_eq!(d.files["usr/libexec/rpcd/luci.pepwrt"].0, "0755");
    assert!(
        d.files
            .contains_key("lib/apk/packages/luci-app-pepwrt.list")
    );
}

#[test]
fn apks_are_reproducible() {
    let arch = archs()[0].clone();
    let name = format!("pepwrt_{}-r1_{arch}.apk", version());
    let again = scratch("dist-again-apk");
    let _ = std::fs::remove_dir_all(&again);
    let out = Command::new(repo().join("openwrt/build-apk"))
        .args(["--no-build", &arch])
        .env("PEPWRT_DIST", &again)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dist().join(&name)).unwrap(),
        std::fs::read(again.join(&name)).unwrap(),
        "{name} differs between two builds"
    );
}

/// Empty packages named like pepwrt's dependencies, so `apk add` can
/// resolve them in an empty root (the real ones are kernel modules).
fn dependency_stand_ins(dir: &Path) -> Vec<String> {
    [
        "kmod-nft-queue",
        "kmod-nft-tproxy",
        "kmod-nft-socket",
        "kmod-nf-conntrack-netlink",
        "kmod-tcp-bbr",
        "luci-base",
    ]
    .iter()
    .map(|name| {
        let out = dir.join(format!("{name}.apk"));
        run_apk(&[
            "mkpkg",
            "--info",
            &format!("name:{name}"),
            "--info",
            "version:1-r1",
            "--info",
            "arch:noarch",
            "--info",
            "description:stand-in for a test",
            "--output",
            out.to_str().unwrap(),
        ]);
        out.to_str().unwrap().to_string()
    })
    .collect()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn apk_installs_upgrades_and_removes_in_an_empty_root() {
    let tmp = TempDir::new("apk-root");
    let deps = dependency_stand_ins(&tmp.0);
    for arch in archs() {
        let root = tmp.0.join(format!("root-{arch}"));
        let r = root.to_str().unwrap();
        let pkg = apk_path("pepwrt", &arch);
        let luci = apk_path("luci-app-pepwrt", "all");
        let mut args = vec![
            "add",
            "--root",
            r,
            "--initdb",
            "--allow-untrusted",
            "--no-network",
            "--no-scripts",
            "--arch",
            &arch,
        ];
        args.extend(deps.iter().map(String::as_str));
        args.push(pkg.to_str().unwrap());
        args.push(luci.to_str().unwrap());
        let log = run_apk(&args);
        assert!(
            log.contains(&format!("Installing pepwrt ({}-r1)", version())),
            "{log}"
        );
        assert_eq!(
            std::fs::read(root.join("usr/sbin/pepwrt")).unwrap(),
            std::fs::read(target_dir().join("cross").join(&arch).join("pepwrt")).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("etc/config/pepwrt"), 0o600);
        assert_eq!(mode("etc/init.d/pepwrt"), 0o755);
        assert!(
            root.join("www/luci-static/resources/view/pepwrt/status.js")
                .exists()
        );
        // What default_postinst and sysupgrade read.
        let list = std::fs::read_to_string(root.join("lib/apk/packages/pepwrt.list")).unwrap();
        let want: Vec<String> = {
            let mut v: Vec<String> = PEPWRT_FILES
                .iter()
                .filter(|(f, _)| !f.starts_with("lib/apk/"))
                .map(|(f, _)| format!("/{f}"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(list.lines().collect::<Vec<_>>(), want);
        assert_eq!(
            std::fs::read_to_string(root.join("lib/apk/packages/pepwrt.conffiles")).unwrap(),
            "/etc/config/pepwrt\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("lib/apk/packages/pepwrt.conffiles_static")).unwrap(),
            format!(
                "/etc/config/pepwrt {}\n",
                sha256(&root.join("etc/config/pepwrt"))
            )
        );
        let db = std::fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
        assert!(
            db.contains(&format!("P:pepwrt\nV:{}-r1\nA:{arch}\n", version())),
            "{db}"
        );
    }

    // Upgrade over an edited config, then removal (x86_64, or the first).
    let arch = if archs().iter().any(|a| a == "x86_64") {
        "x86_64".to_string()
    } else {
        archs()[0].clone()
    };
    let root = tmp.0.join(format!("root-{arch}"));
    let r = root.to_str().unwrap();
    let config = root.join("etc/config/pepwrt");
    let mut edited = std::fs::read_to_string(&config).unwrap();
    edited = edited.replacen("option enabled '0'", "option enabled '1'", 1);
    std::fs::write(&config, &edited).unwrap();
    let r2 = dist_r2("apk", &arch).join(format!("pepwrt_{}-r2_{arch}.apk", version()));
    let log = run_apk(&[
        "add",
        "--root",
        r,
        "--allow-untrusted",
        "--no-network",
        "--no-scripts",
        r2.to_str().unwrap(),
    ]);
    assert!(
        log.contains(&format!(
            "Upgrading pepwrt ({v}-r1 -> {v}-r2)",
            v = version()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "upgrade replaced the edited config"
    );
    assert_eq!(
        std::fs::read(root.join("etc/config/pepwrt.apk-new")).unwrap(),
        std::fs::read(repo().join("openwrt/pepwrt/files/pepwrt.config")).unwrap(),
        "the new default config goes beside the edited one"
    );
    run_apk(&[
        "del",
        "--root",
        r,
        "--no-network",
        "--no-scripts",
        "luci-app-pepwrt",
        "pepwrt",
    ]);
    for gone in [
        "usr/sbin/pepwrt",
        "etc/init.d/pepwrt",
        "lib/apk/packages/pepwrt.list",
        "www/luci-static/resources/view/pepwrt/config.js",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after apk del");
    }
    // apk keeps a configuration file the user changed.
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
}

#[test]
fn apk_scripts_need_a_shell_in_the_root() {
    // Without --no-scripts apk runs post-install by chroot into the root;
    // an empty root has no /bin/sh, so apk reports the script failed.
    let tmp = TempDir::new("apk-scripts");
    let deps = dependency_stand_ins(&tmp.0);
    let arch = archs()[0].clone();
    let root = tmp.0.join("root");
    let pkg = apk_path("pepwrt", &arch);
    let mut args = vec![
        "add",
        "--root",
        root.to_str().unwrap(),
        "--initdb",
        "--allow-untrusted",
        "--no-network",
        "--arch",
        &arch,
    ];
    args.extend(deps.iter().map(String::as_str));
    args.push(pkg.to_str().unwrap());
    let out = Command::new(apk()).args(&args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Executing pepwrt-"), "{text}");
    assert!(text.contains("post-install"), "{text}");
    assert!(root.join("usr/sbin/pepwrt").exists(), "{text}");
}

// ---- .ipk in a real OpenWrt 18.06 userland ---------------------------------

/// An OpenWrt 18.06.1 x86 root extracted for one test, entered with
/// chroot in a network namespace of the test's own (and a mount namespace
/// for its /proc); removed when dropped.
struct OpenWrtRoot {
    dir: TempDir,
    ns: String,
}

impl OpenWrtRoot {
    fn new(tag: &str) -> OpenWrtRoot {
        common::require_root();
        let tarball = shared_tools().join(common::OPENWRT_ROOT_TARBALL);
        let dir = TempDir::new(tag);
        common::run(&[
            "tar",
            "xzf",
            tarball.to_str().unwrap(),
            "-C",
            dir.0.to_str().unwrap(),
        ]);
        // Local files, not a feed: no signatures; and the packages' own
        // architectures next to the root's i386_pentium4.
        let conf = dir.0.join("etc/opkg.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let mut text: String = text
            .lines()
            .filter(|l| !l.contains("check_signature"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str("arch all 1\narch noarch 1\narch i386_pentium4 10\narch x86_64 20\n");
        std::fs::write(&conf, text).unwrap();
        std::fs::create_dir_all(dir.0.join("tmp/lock")).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = format!("pkgow{}x{n}", std::process::id() % 100_000);
        common::run(&["ip", "netns", "add", &ns]);
        let root = OpenWrtRoot { dir, ns };
        common::run(&["ip", "-n", &root.ns, "link", "set", "lo", "up"]);
        // The LAN bridge the default config intercepts on.
        let peer = format!("{}p", root.ns);
        common::run(&[
            "ip", "-n", &root.ns, "link", "add", "br-lan", "type", "veth", "peer", "name", &peer,
        ]);
        common::run(&["ip", "-n", &root.ns, "link", "set", "br-lan", "up"]);
        // `pepwrt check` looks for the TPROXY and socket modules; a rule
        // using them (in this namespace only) loads them on this host.
        let loaded = Command::new("ip")
            .args([
                "netns",
                "exec",
                &root.ns,
                "iptables",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "-m",
                "socket",
                "-j",
                "TPROXY",
                "--on-port",
                "1",
                "--tproxy-mark",
                "1",
            ])
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "loading TPROXY and socket: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        root
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    /// Copies a host file into the root's /tmp; its path inside.
    fn put(&self, file: &Path) -> String {
        let name = file.file_name().unwrap().to_str().unwrap();
        std::fs::copy(file, self.path("tmp").join(name)).unwrap();
        format!("/tmp/{name}")
    }

    /// Runs a script with the root's /bin/sh; (success, stdout + stderr).
    fn sh(&self, script: &str) -> (bool, String) {
        let root = self.dir.0.to_str().unwrap();
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &self.ns, "unshare", "-m", "sh", "-c"])
            .arg("mount -t proc proc \"$1/proc\" && exec chroot \"$1\" /bin/sh -c \"$2\"")
            .args(["-", root, script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("PROCD_DEBUG", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn must(&self, script: &str) -> String {
        let (ok, text) = self.sh(script);
        assert!(ok, "{script}:\n{text}");
        text
    }

    /// Stand-ins (openwrt/lib/stubs/record, logging to /tmp/shim.log) for
    /// ip and iptables: busybox 1.28's ip rejects the policy rule, and this
    /// iptables lacks the TPROXY, socket and NFQUEUE modules. Returns the
    /// shell prefix that puts them first on PATH.
    fn shim(&self) -> &'static str {
        let dir = self.path("tmp/shim");
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(repo().join("openwrt/lib/stubs/record"), dir.join("record")).unwrap();
            for n in ["ip", "iptables", "ip6tables"] {
                std::os::unix::fs::symlink("record", dir.join(n)).unwrap();
            }
        }
        "export PATH=/tmp/shim:$PATH STUB_LOG=/tmp/shim.log;"
    }

    fn uci(&self, what: &str) -> String {
        self.must(&format!("uci -q get {what} || true"))
            .trim()
            .to_string()
    }
}

impl Drop for OpenWrtRoot {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
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
fn openwrt_with_pepwrt(tag: &str) -> (OpenWrtRoot, String) {
    assert!(
        archs().iter().any(|a| a == "x86_64"),
        "the OpenWrt root runs the x86_64 package: keep x86_64 in PEPWRT_ARCHS"
    );
    let ow = OpenWrtRoot::new(tag);
    let ipk = ow.put(&ipk_path("pepwrt", "x86_64"));
    let log = ow.must(&format!("opkg install --force-depends {ipk} 2>&1"));
    (ow, log)
}

#[test]
fn ipk_installs_starts_stops_and_removes_in_openwrt_18_06() {
    let (ow, log) = openwrt_with_pepwrt("owrt-life");
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

    // Enabled, with busybox 1.28's ip: refused by name, nothing installed.
    ow.must(
        "uci set pepwrt.main.enabled=1; uci set pepwrt.main.server_cc=cubic; uci commit pepwrt",
    );
    let out = ow.must("/etc/init.d/pepwrt start");
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
        "\"limits\": { \"nofile\": \"320 320\" }",
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
    let (ow, _) = openwrt_with_pepwrt("owrt-upgrade");
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
    let (ow, _) = openwrt_with_pepwrt("owrt-luci");
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
    let (ow, _) = openwrt_with_pepwrt("owrt-uci");
    ow.must(
        "uci set pepwrt.main.enabled=1; uci set pepwrt.main.server_cc=cubic; \
         uci add_list pepwrt.main.intercept=198.18.2.0/24; uci add_list pepwrt.main.exclude_port=853; \
         uci set pepwrt.snoop.enabled=1; uci commit pepwrt",
    );
    let out = ow.must(&format!("{} /etc/init.d/pepwrt start", ow.shim()));
    let json = procd_json(&out);
    for want in [
        "\"--intercept\", \"br-lan\", \"--intercept\", \"198.18.2.0/24\", \"--exclude-port\", \"22\", \"--exclude-port\", \"853\"",
        "\"--snoop\", \"wlan0\"",
    ] {
        assert!(json.contains(want), "missing {want} in {json}");
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
