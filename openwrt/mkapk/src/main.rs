//! mkapk: writes an APKv3 package (OpenWrt 25.12 and later) from a tree
//! of files, as `apk mkpkg` of apk-tools 3 does, on any Linux machine.

mod adb;
mod package;

use flate2::Compression;
use flate2::write::DeflateEncoder;
use package::{INFO_FIELDS, SCRIPTS, Spec};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
mkapk: write an APKv3 package (OpenWrt 25.12 and later) without apk-tools

usage: mkapk [OPTIONS] --info name:NAME --info version:VERSION --info arch:ARCH
             --output FILE

Takes the options of `apk mkpkg` (apk-tools 3) that building a package
needs, and writes the same package: an ADB block with the `pckg` schema
(info, paths with their files, scripts) followed by one data block per
non-empty regular file, compressed with raw deflate behind `ADBd` unless
--compression none. The same tree and options give the same bytes.

options:
  -I, --info KEY:VALUE     a package info field: name, version, arch,
                           description, license, origin, maintainer, url,
                           build-time, provider-priority, layer, depends,
                           provides, replaces, install-if, recommends
                           (dependency lists: names separated by spaces,
                           !name for a conflict). name, version and arch
                           are required; installed-size and the package's
                           digest (hashes) are computed.
  -s, --script TYPE:FILE   a script: trigger, pre-install, post-install,
                           pre-deinstall, post-deinstall, pre-upgrade,
                           post-upgrade
  -F, --files DIR          the tree to pack (its top is the package's /)
  -o, --output FILE        where to write the package
  -c, --compression ALG    deflate (the default, as apk's), deflate:LEVEL
                           (0-9) or none
      --owner NAME         record NAME as every entry's owner instead of
                           the owner's name on this machine (e.g. root:
                           no need to build as root)
      --group NAME         the same for the group
  -h, --help               this text

environment:
  SOURCE_DATE_EPOCH        when set, every file's mtime is recorded as this
                           (seconds since 1970), as apk-tools does

Not supported (refused with an error): version constraints in dependencies,
tags, triggers, extended attributes (never recorded).";

struct Args {
    spec: Spec,
    output: PathBuf,
    /// None: uncompressed; Some(level).
    deflate: Option<u32>,
}

fn split<'a>(opt: &str, v: &'a str) -> Result<(&'a str, &'a str), String> {
    v.split_once(':')
        .ok_or_else(|| format!("{opt} takes KEY:VALUE, not '{v}'"))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut spec = Spec {
        info: Vec::new(),
        scripts: Vec::new(),
        files: None,
        owner: None,
        group: None,
        mtime: None,
    };
    let mut output = None;
    let mut deflate = Some(6);
    while let Some(opt) = argv.next() {
        if opt == "-h" || opt == "--help" {
            return Ok(None);
        }
        let mut value = || argv.next().ok_or_else(|| format!("{opt} needs a value"));
        match opt.as_str() {
            "-I" | "--info" => {
                let v = value()?;
                let (key, text) = split(&opt, &v)?;
                let Some(&(_, index, _)) = INFO_FIELDS.iter().find(|f| f.0 == key) else {
                    return Err(format!("invalid info field: {key}"));
                };
                spec.info.retain(|(i, _)| *i != index);
                spec.info.push((index, text.to_string()));
            }
            "-s" | "--script" => {
                let v = value()?;
                let (kind, file) = split(&opt, &v)?;
                let Some(index) = SCRIPTS.iter().position(|s| *s == kind) else {
                    return Err(format!(
                        "invalid script type: {kind} (one of {})",
                        SCRIPTS.join(", ")
                    ));
                };
                let text = std::fs::read(file)
                    .map_err(|e| format!("failed to load script: {file}: {e}"))?;
                spec.scripts.retain(|(i, _)| *i != index + 1);
                spec.scripts.push((index + 1, text));
            }
            "-F" | "--files" => spec.files = Some(PathBuf::from(value()?)),
            "-o" | "--output" => output = Some(PathBuf::from(value()?)),
            "--owner" => spec.owner = Some(value()?),
            "--group" => spec.group = Some(value()?),
            "-c" | "--compression" => {
                let v = value()?;
                deflate = match v.as_str() {
                    "none" => None,
                    "deflate" => Some(6),
                    _ => match v.strip_prefix("deflate:").map(str::parse::<u32>) {
                        Some(Ok(l)) if l <= 9 => Some(l),
                        _ => {
                            return Err(format!(
                                "compression '{v}': use none, deflate or deflate:0..9"
                            ));
                        }
                    },
                };
            }
            _ => return Err(format!("unknown option '{opt}' (see --help)")),
        }
    }
    if let Ok(t) = std::env::var("SOURCE_DATE_EPOCH")
        && !t.is_empty()
    {
        spec.mtime = Some(
            t.parse()
                .map_err(|_| format!("SOURCE_DATE_EPOCH must be seconds, not '{t}'"))?,
        );
    }
    let output = output.ok_or("--output FILE is required")?;
    Ok(Some(Args {
        spec,
        output,
        deflate,
    }))
}

fn run(args: &Args) -> Result<(), String> {
    let pkg = package::build(&args.spec).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    pkg.write(&mut raw).map_err(|e| e.to_string())?;
    let bytes = match args.deflate {
        None => raw,
        Some(level) => {
            let mut out = b"ADBd".to_vec();
            let mut z = DeflateEncoder::new(&mut out, Compression::new(level));
            z.write_all(&raw)
                .and_then(|_| z.finish().map(drop))
                .map_err(|e| format!("deflate: {e}"))?;
            out
        }
    };
    let mut tmp = args.output.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, &args.output))
        .map_err(|e| format!("{}: {e}", args.output.display()))
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mkapk: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("mkapk: {e}");
            ExitCode::from(2)
        }
    }
}
