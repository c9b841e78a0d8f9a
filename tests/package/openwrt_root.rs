//! A real OpenWrt 18.06 userland to install packages into.

use super::*;

// ---- .ipk in a real OpenWrt 18.06 userland ---------------------------------

/// An OpenWrt 18.06.1 x86 root extracted for one test, entered with
/// chroot in a network namespace of the test's own (and a mount namespace
/// for its /proc); removed when dropped.
pub struct OpenWrtRoot {
    dir: TempDir,
    ns: String,
}

impl OpenWrtRoot {
    /// None (a loud skip) without the root file system's tarball.
    pub fn new(tag: &str) -> Option<OpenWrtRoot> {
        common::require_root();
        let tarball = common::openwrt_rootfs()?;
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
        Some(root)
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    /// Copies a host file into the root's /tmp; its path inside.
    pub fn put(&self, file: &Path) -> String {
        let name = file.file_name().unwrap().to_str().unwrap();
        std::fs::copy(file, self.path("tmp").join(name)).unwrap();
        format!("/tmp/{name}")
    }

    /// Runs a script with the root's /bin/sh; (success, stdout + stderr).
    pub fn sh(&self, script: &str) -> (bool, String) {
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

    pub fn must(&self, script: &str) -> String {
        let (ok, text) = self.sh(script);
        assert!(ok, "{script}:\n{text}");
        text
    }

    /// Stand-ins (tests/fixtures/stubs/record, logging to /tmp/shim.log) for
    /// ip, iptables and ebtables: busybox 1.28's ip rejects the policy
    /// rule, this iptables lacks the TPROXY, socket and NFQUEUE modules, and
    /// ebtables (Snoop's bridge marks) is not installed. Returns the shell
    /// prefix that puts them first on PATH.
    pub fn shim(&self) -> String {
        self.shim_only(&[
            "ip",
            "iptables",
            "ip6tables",
            "iptables-restore",
            "ip6tables-restore",
            "ebtables",
        ])
    }

    /// The same for just the named commands (in a folder of their own).
    pub fn shim_only(&self, names: &[&str]) -> String {
        let folder = format!("tmp/shim-{}", names.join("-"));
        let dir = self.path(&folder);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(
                repo().join("tests/fixtures/stubs/record"),
                dir.join("record"),
            )
            .unwrap();
            for n in names {
                std::os::unix::fs::symlink("record", dir.join(n)).unwrap();
            }
        }
        format!("export PATH=/{folder}:$PATH STUB_LOG=/tmp/shim.log;")
    }

    pub fn uci(&self, what: &str) -> String {
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
