//! .apk: our packages read back by the tests' own reader (adb.rs); where a
//! real apk 3 is at hand (APK=path, or apk on PATH), also read and
//! installed by it.

use super::adb::Package;
use super::*;

/// A real apk-tools 3, if this machine has one: $APK, else apk on PATH.
/// It is gone from the project's machines, so its absence is a loud skip
/// even in CI.
fn real_apk() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("APK").map(PathBuf::from),
        Some(PathBuf::from("apk")),
    ];
    for c in candidates.into_iter().flatten() {
        let v = Command::new(&c).arg("--version").output();
        if let Ok(o) = v
            && String::from_utf8_lossy(&o.stdout).starts_with("apk-tools 3.")
        {
            return Some(c);
        }
    }
    common::skipped(
        "no apk-tools 3 (set APK=/path/to/apk to run it; \
         the packages are still checked by the tests' own reader)",
    );
    None
}

/// Runs apk; fails the test with its output when it fails.
fn run_apk(apk: &Path, args: &[&str]) -> String {
    let out = Command::new(apk).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "apk {args:?} failed:\n{text}");
    text
}

/// What a package holds, as the tests compare it: the info fields, each
/// file's mode and owner, and the scripts.
struct ApkDump {
    info: BTreeMap<String, String>,
    depends: Vec<String>,
    files: BTreeMap<String, (String, String)>,
    scripts: BTreeMap<String, String>,
    pkg: Package,
}

fn adbdump(path: &Path) -> ApkDump {
    let pkg = Package::read_file(path);
    let mut info = BTreeMap::new();
    for k in super::adb::INFO_TEXT {
        info.insert(k.to_string(), pkg.info_text(k));
    }
    let files = pkg
        .files()
        .unwrap()
        .into_iter()
        .map(|f| (f.path, (format!("0{:o}", f.mode), f.user)))
        .collect();
    let mut scripts = BTreeMap::new();
    for s in ["post-install", "post-upgrade", "pre-deinstall"] {
        if let Some(t) = pkg.script(s) {
            scripts.insert(s.to_string(), t);
        }
    }
    if let Some(apk) = real_apk() {
        // The real tool must read it too, and see the same fields.
        let text = run_apk(&apk, &["adbdump", path.to_str().unwrap()]);
        assert_eq!(text, pkg.dump(), "{}: apk adbdump differs", path.display());
    }
    ApkDump {
        info,
        depends: pkg.depends(),
        files,
        scripts,
        pkg,
    }
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
        let bin = d
            .pkg
            .files()
            .unwrap()
            .into_iter()
            .find(|f| f.path == "usr/sbin/pepwrt")
            .unwrap();
        check_elf(&arch, &bin.data);
        assert!(
            bin.data
                == std::fs::read(target_dir().join("cross").join(&arch).join("pepwrt")).unwrap(),
            "{arch}: the packed binary is not cross/build's"
        );
        for f in d.pkg.files().unwrap() {
            assert_eq!(
                f.mtime, 1700000000,
                "{}: mtime must be SOURCE_DATE_EPOCH",
                f.path
            );
            assert_eq!(
                (f.user.as_str(), f.group.as_str()),
                ("root", "root"),
                "{}",
                f.path
            );
        }
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
fn apks_are_reproducible_without_apk_tools() {
    assert_reproducible("apk");
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
        must_run(Command::new(mkapk()).args([
            "--owner",
            "root",
            "--group",
            "root",
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
        ]));
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
    let Some(apk) = real_apk() else { return };
    let run_apk = |args: &[&str]| run_apk(&apk, args);
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
    let Some(apk) = real_apk() else { return };
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
    let out = Command::new(&apk).args(&args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Executing pepwrt-"), "{text}");
    assert!(text.contains("post-install"), "{text}");
    assert!(root.join("usr/sbin/pepwrt").exists(), "{text}");
}

/// What OpenWrt's default_postinst and sysupgrade read from an installed
/// apk package, checked in the package itself (with or without a real
/// apk to install it): the file list, the conffiles and their checksums.
#[test]
fn apk_lists_and_conffiles_match_the_files() {
    use sha2::{Digest, Sha256};
    for arch in archs() {
        let files = Package::read_file(&apk_path("pepwrt", &arch))
            .files()
            .unwrap();
        let data = |p: &str| {
            files
                .iter()
                .find(|f| f.path == p)
                .unwrap_or_else(|| panic!("{arch}: no {p}"))
                .data
                .clone()
        };
        let mut want: Vec<String> = files
            .iter()
            .filter(|f| !f.path.starts_with("lib/apk/"))
            .map(|f| format!("/{}\n", f.path))
            .collect();
        want.sort();
        assert_eq!(
            String::from_utf8(data("lib/apk/packages/pepwrt.list")).unwrap(),
            want.concat(),
            "{arch}"
        );
        assert_eq!(
            data("lib/apk/packages/pepwrt.conffiles"),
            b"/etc/config/pepwrt\n"
        );
        let sum = super::adb::hex(&Sha256::digest(data("etc/config/pepwrt")));
        assert_eq!(
            String::from_utf8(data("lib/apk/packages/pepwrt.conffiles_static")).unwrap(),
            format!("/etc/config/pepwrt {sum}\n"),
            "{arch}"
        );
    }
}
