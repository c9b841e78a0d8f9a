//! Cross builds: every OpenWrt architecture's binary prints its version
//! under qemu-user, and the unit tests pass on big-endian MIPS and 32-bit
//! ARM, where byte-order and word-size mistakes in packet code show.
//!
//! Needs (installed by .ci/run): qemu-user-static for qemu-{mips,mipsel,
//! arm,aarch64}-static, and what cross/build installs itself (rust-src via
//! rustup, ziglang and cargo-zigbuild via pip). PEPWRT_ARCHS (space
//! separated) limits the --version check to some architectures; the unit
//! tests always run on mips_24kc and arm_cortex-a7_neon-vfpv4.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const ARCHS: &[(&str, &str)] = &[
    ("mips_24kc", "qemu-mips-static"),
    ("mipsel_24kc", "qemu-mipsel-static"),
    ("arm_cortex-a7_neon-vfpv4", "qemu-arm-static"),
    ("aarch64_cortex-a53", "qemu-aarch64-static"),
    ("x86_64", ""),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn need(qemu: &str) {
    let runs = Command::new(qemu)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "{qemu} does not run: install Debian's qemu-user-static (apt-get install qemu-user-static)"
    );
}

/// Runs cross/build with `args`, failing the test with its output.
fn cross_build(args: &[&str]) -> String {
    let start = std::time::Instant::now();
    let out = Command::new(repo().join("cross/build"))
        .args(args)
        .output()
        .expect("running cross/build");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "cross/build {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("cross/build {args:?} took {:?}\n{stdout}", start.elapsed());
    stdout
}

fn archs() -> Vec<(&'static str, &'static str)> {
    let only = std::env::var("PEPWRT_ARCHS").unwrap_or_default();
    let only: Vec<&str> = only.split_whitespace().collect();
    for name in &only {
        assert!(
            ARCHS.iter().any(|(a, _)| a == name),
            "PEPWRT_ARCHS: unknown architecture {name}"
        );
    }
    ARCHS
        .iter()
        .filter(|(a, _)| only.is_empty() || only.contains(a))
        .copied()
        .collect()
}

/// The release binaries, built once per test binary.
fn built() -> &'static str {
    static OUT: OnceLock<String> = OnceLock::new();
    OUT.get_or_init(|| {
        let names: Vec<&str> = archs().iter().map(|(a, _)| *a).collect();
        cross_build(&names)
    })
}

#[test]
fn every_arch_prints_its_version_under_qemu() {
    let report = built();
    let want = format!("pepwrt {}", env!("CARGO_PKG_VERSION"));
    for (arch, qemu) in archs() {
        let bin = target_dir().join("cross").join(arch).join("pepwrt");
        assert!(bin.exists(), "{} missing", bin.display());
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("{arch}\t")))
            .unwrap_or_else(|| panic!("cross/build reported nothing for {arch}:\n{report}"));
        eprintln!("{line}");
        let out = if qemu.is_empty() {
            Command::new(&bin).arg("--version").output()
        } else {
            need(qemu);
            Command::new(qemu).arg(&bin).arg("--version").output()
        }
        .unwrap();
        assert!(out.status.success(), "{arch}: --version failed: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{arch} --version"
        );
    }
}

#[test]
fn mips_binary_fits_its_budget() {
    built();
    // After built(): a second build must not race the one it does.
    if !archs().iter().any(|(a, _)| *a == "mips_24kc") {
        cross_build(&["mips_24kc"]);
    }
    let bin = target_dir().join("cross/mips_24kc/pepwrt");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size <= 400 * 1024, "mips_24kc: {size} bytes > 400 KB");
}

#[test]
fn unit_tests_pass_on_big_endian_mips() {
    need("qemu-mips-static");
    cross_build(&["--test", "mips_24kc"]);
}

#[test]
fn unit_tests_pass_on_armv7() {
    need("qemu-arm-static");
    cross_build(&["--test", "arm_cortex-a7_neon-vfpv4"]);
}

#[test]
fn unknown_arch_is_a_clear_error() {
    let out = Command::new(repo().join("cross/build"))
        .arg("sparc64")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown architecture 'sparc64'"),
        "stderr: {err}"
    );
}
