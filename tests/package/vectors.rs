//! Packages the real `apk mkpkg` 3.0.6 made (../shared/apk-vectors, with
//! their `apk adbdump` text and invocations): they check the reader, and
//! the writer must make the same packages from the same trees.

use super::adb::Package;
use super::*;

/// The vectors' folder: $PEPWRT_APK_VECTORS, else ../shared/apk-vectors
/// next to the checkout; None is a loud skip.
fn vectors() -> Option<PathBuf> {
    let found = match std::env::var_os("PEPWRT_APK_VECTORS") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(repo().join("../shared/apk-vectors")),
    };
    common::optional_tool(
        found.filter(|p| p.join("vector-min-none.apk").is_file()),
        "the APKv3 test vectors",
        "set PEPWRT_APK_VECTORS to a folder of packages made by apk mkpkg 3 \
         with their `apk adbdump` text (CI has them in ../shared/apk-vectors)",
    )
}

/// The uncompressed stream of a package file.
fn raw(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    match &bytes[..4] {
        b"ADBd" => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&bytes[4..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        _ => bytes,
    }
}

#[test]
fn reader_dumps_every_vector_as_apk_adbdump_does() {
    let Some(dir) = vectors() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "apk") {
            continue;
        }
        let want = std::fs::read_to_string(path.with_extension("adbdump.txt")).unwrap();
        let pkg = Package::read_file(&path);
        let deflated = path.to_str().unwrap().contains("none");
        assert_eq!(pkg.compression == "none", deflated, "{}", path.display());
        let got = pkg.dump();
        assert_eq!(got, want, "{}: the reader's dump differs", path.display());
        n += 1;
    }
    assert!(n >= 6, "only {n} vectors in {}", dir.display());
}

/// A copy of a vector's input tree as its README says it was packed:
/// mtimes 2026-01-01, modes as committed, vector-link a symlink.
fn input_tree(dir: &Path, name: &str, tmp: &TempDir) -> PathBuf {
    let to = tmp.0.join(name);
    must_run(Command::new("cp").arg("-r").arg(dir.join(name)).arg(&to));
    must_run(Command::new("chmod").args(["-R", "u+w"]).arg(&to));
    let link = to.join("files/usr/bin/vector-link");
    if link.exists() {
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("vector", &link).unwrap();
    }
    must_run(Command::new("find").arg(&to).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        "@1767225600",
        "{}",
        "+",
    ]));
    to
}

const MIN: &[&str] = &[
    "--info",
    "name:vector-min",
    "--info",
    "version:1.0.0-r1",
    "--info",
    "arch:noarch",
    "--info",
    "description:minimal",
    "--info",
    "license:MIT",
];
const SCRIPTS: &[&str] = &[
    "--info",
    "name:vector-scripts",
    "--info",
    "version:2.1.0-r3",
    "--info",
    "arch:x86_64",
    "--info",
    "description:a package with a script, a symlink, an executable and a config file",
    "--info",
    "license:GPL-2.0-only",
    "--info",
    "origin:vector/scripts",
    "--info",
    "depends:libc kmod-nft-queue",
];

#[test]
fn mkapk_makes_the_vectors_from_their_trees() {
    let Some(dir) = vectors() else { return };
    let tmp = TempDir::new("apk-vectors");
    for (name, args) in [("vector-min", MIN), ("vector-scripts", SCRIPTS)] {
        let tree = input_tree(&dir, &format!("{name}.in"), &tmp);
        for compression in ["none", "deflate"] {
            let out = tmp.0.join(format!("{name}-{compression}.apk"));
            let mut cmd = Command::new(mkapk());
            cmd.args([
                "--compression",
                compression,
                "--owner",
                "root",
                "--group",
                "root",
            ])
            .args(args)
            .arg("--files")
            .arg(tree.join("files"))
            .arg("--output")
            .arg(&out)
            .env_remove("SOURCE_DATE_EPOCH");
            if tree.join("s/post-install").exists() {
                cmd.arg("--script").arg(format!(
                    "post-install:{}",
                    tree.join("s/post-install").display()
                ));
            }
            must_run(&mut cmd);
            let vector = dir.join(format!("{name}-{compression}.apk"));
            // Field for field first, for a readable failure.
            assert_eq!(
                Package::read_file(&out).dump(),
                Package::read_file(&vector).dump(),
                "{name}-{compression}"
            );
            // Then byte for byte: uncompressed, apk-tools' layout leaves
            // nothing open once the order of writes is the same (see
            // openwrt/mkapk/src/adb.rs); deflated, the compressor's
            // choices may differ (zlib's and miniz_oxide's streams are
            // both valid), so the bytes compared are the decompressed ones.
            same_bytes(&raw(&out), &raw(&vector), &format!("{name}-{compression}"));
        }
    }
}

/// Byte-for-byte equality, reporting where the first difference is.
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        let around = |b: &[u8]| super::adb::hex(&b[i.saturating_sub(8)..(i + 8).min(b.len())]);
        panic!(
            "{what}: bytes differ from offset {i} (of {} and {}): ours {} theirs {}",
            got.len(),
            want.len(),
            around(got),
            around(want)
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

/// Writes a package's files into `root` as they were packed: modes,
/// mtimes, symlinks. Returns the directories, for their modes.
fn extract(pkg: &Package, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in pkg.dirs() {
        let d = root.join(&dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for f in pkg.files().unwrap() {
        let p = root.join(&f.path);
        match &f.link {
            Some(to) => std::os::unix::fs::symlink(to, &p).unwrap(),
            None => {
                std::fs::write(&p, &f.data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode)).unwrap();
            }
        }
        must_run(
            Command::new("touch")
                .args(["-h", "-d", &format!("@{}", f.mtime)])
                .arg(&p),
        );
    }
}

/// The `apk mkpkg` options that made a package, read back from it.
/// `depends` as given, in build-packages' order at the vectors' commit:
/// apk stores them sorted, but lays their names out in the order given.
fn invocation(pkg: &Package, depends: &str, scripts_dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for key in super::adb::INFO_TEXT {
        let v = pkg.info_text(key);
        if !v.is_empty() {
            args.extend(["--info".to_string(), format!("{key}:{v}")]);
        }
    }
    let mut sorted: Vec<&str> = depends.split(' ').collect();
    sorted.sort();
    assert_eq!(pkg.depends(), sorted);
    args.extend(["--info".to_string(), format!("depends:{depends}")]);
    for s in ["post-install", "post-upgrade", "pre-deinstall"] {
        if let Some(text) = pkg.script(s) {
            let f = scripts_dir.join(s);
            std::fs::write(&f, text).unwrap();
            args.extend(["--script".to_string(), format!("{s}:{}", f.display())]);
        }
    }
    args
}

#[test]
fn mkapk_remakes_this_projects_packages_as_apk_made_them() {
    let Some(dir) = vectors() else { return };
    let tmp = TempDir::new("apk-remake");
    for (name, depends) in [
        (
            "pepwrt_0.1.0-r1_x86_64.apk",
            "kmod-nft-queue kmod-nft-tproxy kmod-nft-socket kmod-nf-conntrack-netlink kmod-tcp-bbr",
        ),
        ("luci-app-pepwrt_0.1.0-r1_all.apk", "luci-base pepwrt"),
    ] {
        let vector = dir.join(name);
        let pkg = Package::read_file(&vector);
        let root = tmp.0.join(format!("{name}.root"));
        let scripts = tmp.0.join(format!("{name}.scripts"));
        std::fs::create_dir_all(&scripts).unwrap();
        extract(&pkg, &root);
        let out = tmp.0.join(name);
        must_run(
            Command::new(mkapk())
                .args(["--owner", "root", "--group", "root"])
                .args(invocation(&pkg, depends, &scripts))
                .arg("--files")
                .arg(&root)
                .arg("--output")
                .arg(&out)
                .env_remove("SOURCE_DATE_EPOCH"),
        );
        same_bytes(&raw(&out), &raw(&vector), name);
        assert_eq!(Package::read_file(&out).dump(), pkg.dump(), "{name}");
    }
}

/// Runs the reader where a panic would be a failure too.
fn rejects(bytes: &[u8]) -> Result<String, String> {
    let b = bytes.to_vec();
    match std::panic::catch_unwind(move || Package::read(&b).map(|_| ())) {
        Ok(Err(msg)) => Ok(msg),
        Ok(Ok(())) => Err("accepted".into()),
        Err(_) => Err("panicked".into()),
    }
}

#[test]
fn reader_rejects_every_flipped_byte_and_truncation() {
    let Some(dir) = vectors() else { return };
    let small = std::fs::read(dir.join("vector-min-none.apk")).unwrap();
    for i in 0..small.len() {
        let mut b = small.clone();
        b[i] ^= 0xff;
        let r = rejects(&b);
        assert!(r.is_ok(), "byte {i} flipped: {}", r.unwrap_err());
    }
    for name in [
        "vector-min-none.apk",
        "vector-min-deflate.apk",
        "vector-scripts-deflate.apk",
    ] {
        let whole = std::fs::read(dir.join(name)).unwrap();
        for len in 0..whole.len() {
            let r = rejects(&whole[..len]);
            assert!(r.is_ok(), "{name} cut to {len} bytes: {}", r.unwrap_err());
        }
    }
    // One of the messages, to keep them readable.
    let mut b = small.clone();
    let last = b.len() - 3;
    b[last] ^= 1;
    let msg = rejects(&b).unwrap();
    assert!(msg.contains("padding"), "{msg}");
}
