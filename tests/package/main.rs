//! The OpenWrt packages: `openwrt/build-packages` output in both formats,
//! one module per format, with the helpers they share here.
//!
//! - ipk: checked byte by byte (archive layout, control fields, modes, the
//!   binary's ELF architecture), then installed, started, upgraded and
//!   removed by the real opkg of an OpenWrt 18.06 root in a chroot inside
//!   a network namespace of the test's own, with real uci, /etc/rc.common,
//!   /lib/functions.sh, procd.sh (PROCD_DEBUG=1 prints what would go to
//!   procd) and busybox ash.
//! - apk: read by the tests' own APKv3 reader (adb), which is checked
//!   against packages the real `apk mkpkg` 3.0.6 made (vectors); our
//!   writer (openwrt/mkapk) must give the same packages. Where a real apk
//!   3 is on PATH or named by APK=, it also reads and installs them.
//! - init: the shell scripts, and the init script against the stand-ins
//!   in tests/fixtures/stubs for fw4 and for cases the old root cannot
//!   show (fw4 and ucode exist nowhere here; the 18.06 root has fw3,
//!   busybox 1.28's ip and an iptables without the TPROXY/socket/NFQUEUE
//!   modules).
//!
//! Needs (installed by .ci/run): busybox, shellcheck, GNU tar, gzip, what
//! cross/build needs. Optional, skipped loudly without them (failing
//! instead when PEPWRT_REQUIRE_TOOLS=1, as in CI): the OpenWrt 18.06 root
//! tarball (PEPWRT_OPENWRT_ROOTFS or ../shared/tools/), the apk vectors
//! (PEPWRT_APK_VECTORS or ../shared/apk-vectors/), a real apk 3. The
//! archs packaged are mips_24kc, arm_cortex-a7_neon-vfpv4 and x86_64
//! unless PEPWRT_ARCHS says otherwise (`all`, or names); x86_64 is the one
//! run in the OpenWrt root.

#[path = "../common/mod.rs"]
mod common;

mod adb;
mod apk;
mod init;
mod ipk;
mod openwrt_root;
mod vectors;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{TempDir, repo, run_with_progress, target_dir};
use openwrt_root::OpenWrtRoot;

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

/// Packages one format again from the binaries dist() built, into a
/// scratch folder of their own: with another release number (r2, for
/// upgrades) or the same (for reproducibility). PATH holds no apk-tools:
/// the packages must not need them.
fn build_again(format: &str, arch: &str, release: &str) -> PathBuf {
    dist();
    let out = scratch(&format!("dist-{release}-{format}-{arch}"));
    let _ = std::fs::remove_dir_all(&out);
    let path = std::env::var("PATH").unwrap_or_default();
    let path: Vec<&str> = path
        .split(':')
        .filter(|d| !Path::new(d).join("apk").exists())
        .collect();
    must_run(
        Command::new(repo().join(format!("openwrt/build-{format}")))
            .args(["--no-build", arch])
            .env("PEPWRT_DIST", &out)
            .env("PEPWRT_RELEASE", release)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("PATH", path.join(":"))
            .env_remove("APK"),
    );
    out
}

fn dist_r2(format: &str, arch: &str) -> PathBuf {
    build_again(format, arch, "r2")
}

/// The first architecture's pepwrt package, built twice, gives the same
/// bytes.
fn assert_reproducible(format: &str) {
    let arch = archs()[0].clone();
    let name = format!("pepwrt_{}-r1_{arch}.{format}", version());
    let again = build_again(format, &arch, "r1");
    assert!(
        std::fs::read(dist().join(&name)).unwrap() == std::fs::read(again.join(&name)).unwrap(),
        "{name} differs between two builds"
    );
}

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

/// openwrt/mkapk, built once per test binary the way build-packages
/// builds it (its own target directory: the test's cargo holds the main
/// one).
fn mkapk() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = target_dir().join("mkapk");
        let out = Command::new("cargo")
            .args([
                "build",
                "--locked",
                "--release",
                "--quiet",
                "-p",
                "pepwrt-mkapk",
            ])
            .arg("--manifest-path")
            .arg(repo().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&dir)
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "building mkapk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("release/mkapk")
    })
}

/// Runs a command; its stdout, or the test fails with its output.
fn must_run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
