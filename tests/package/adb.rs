//! An APKv3 reader of the tests' own, written from apk-v3(5) and
//! apk-package(5) apart from openwrt/mkapk: it shares none of the
//! writer's code, so a misreading of the format in one is not hidden by
//! the same misreading in the other.
//!
//! `Package::read` checks every value it follows (type, offset, length,
//! alignment, that it lies inside the ADB block), every block (size,
//! padding, order) and every data block against the file it belongs to
//! (size and SHA-256), and the package digest in `info.hashes`; anything
//! off is an `Err` naming the place, never a panic. `Package::dump`
//! prints what `apk adbdump` prints, so a failure shows the package the
//! way apk-tools' users know it, and the real dumps of the vectors check
//! the reader.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Read;

pub type Result<T> = std::result::Result<T, String>;

/// The text fields of `info` this project's packages set.
pub const INFO_TEXT: [&str; 6] = [
    "name",
    "version",
    "description",
    "arch",
    "license",
    "origin",
];

/// A decoded value of the database.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Blob(Vec<u8>),
    /// Slots 1.. of an object or array (slot 0, the count, is dropped);
    /// absent slots are `Null`.
    Object(Vec<Value>),
    Null,
}

impl Value {
    pub fn slot(&self, i: usize) -> &Value {
        match self {
            Value::Object(s) => s.get(i - 1).unwrap_or(&Value::Null),
            _ => &Value::Null,
        }
    }
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Object(s) => s,
            _ => &[],
        }
    }
    pub fn blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<String> {
        self.blob().map(|b| String::from_utf8_lossy(b).into_owned())
    }
    pub fn int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// How a field is shown and what it must hold (apk-package(5)).
#[derive(Clone, Copy)]
enum Field {
    Text,
    /// Text that `apk adbdump` always shows as a `|` block.
    Multiline,
    Hex,
    Int,
    Octal,
    Object(&'static [(&'static str, Field)]),
    Array(&'static Field),
    Dependency,
}

const ACL: &[(&str, Field)] = &[
    ("mode", Field::Octal),
    ("user", Field::Text),
    ("group", Field::Text),
    ("xattrs", Field::Array(&Field::Hex)),
];
const FILE: &[(&str, Field)] = &[
    ("name", Field::Text),
    ("acl", Field::Object(ACL)),
    ("size", Field::Int),
    ("mtime", Field::Int),
    ("hash", Field::Hex),
    ("target", Field::Hex),
];
const DIR: &[(&str, Field)] = &[
    ("name", Field::Text),
    ("acl", Field::Object(ACL)),
    ("files", Field::Array(&Field::Object(FILE))),
];
const DEPS: Field = Field::Array(&Field::Dependency);
const INFO: &[(&str, Field)] = &[
    ("name", Field::Text),
    ("version", Field::Text),
    ("hashes", Field::Hex),
    ("description", Field::Text),
    ("arch", Field::Text),
    ("license", Field::Text),
    ("origin", Field::Text),
    ("maintainer", Field::Text),
    ("url", Field::Text),
    ("repo-commit", Field::Hex),
    ("build-time", Field::Int),
    ("installed-size", Field::Int),
    ("file-size", Field::Int),
    ("provider-priority", Field::Int),
    ("depends", DEPS),
    ("provides", DEPS),
    ("replaces", DEPS),
    ("install-if", DEPS),
    ("recommends", DEPS),
    ("layer", Field::Int),
    ("tags", Field::Array(&Field::Text)),
];
const SCRIPTS: &[(&str, Field)] = &[
    ("trigger", Field::Multiline),
    ("pre-install", Field::Multiline),
    ("post-install", Field::Multiline),
    ("pre-deinstall", Field::Multiline),
    ("post-deinstall", Field::Multiline),
    ("pre-upgrade", Field::Multiline),
    ("post-upgrade", Field::Multiline),
];
const PACKAGE: &[(&str, Field)] = &[
    ("info", Field::Object(INFO)),
    ("paths", Field::Array(&Field::Object(DIR))),
    ("scripts", Field::Object(SCRIPTS)),
    ("triggers", Field::Array(&Field::Text)),
    ("replaces-priority", Field::Int),
];
const DEP: &[(&str, Field)] = &[
    ("name", Field::Text),
    ("version", Field::Text),
    ("match", Field::Int),
];

/// One file of the package, with where it is and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// Path without a leading slash ("usr/sbin/pepwrt").
    pub path: String,
    pub mode: u32,
    pub user: String,
    pub group: String,
    pub size: u64,
    pub mtime: u64,
    /// A symlink's target path, when it is one.
    pub link: Option<String>,
    pub data: Vec<u8>,
}

pub struct Package {
    /// "none" or "deflate".
    pub compression: &'static str,
    pub schema: [u8; 4],
    /// The ADB block's bytes (after its block header).
    pub adb: Vec<u8>,
    pub root: Value,
    /// (path index, file index, contents) of each data block, in order.
    pub data_blocks: Vec<(u32, u32, Vec<u8>)>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| format!("4 bytes at {at} run past the end ({} bytes)", b.len()))
}

/// Follows one value; `at` says where it was found, for messages.
fn value(adb: &[u8], v: u32, at: &str, depth: usize) -> Result<Value> {
    if depth > 16 {
        return Err(format!("{at}: nested deeper than a package can be"));
    }
    let off = (v & 0x0fff_ffff) as usize;
    let need = |len: usize, align: usize| -> Result<()> {
        if !off.is_multiple_of(align) {
            return Err(format!(
                "{at}: value {v:#010x} at offset {off} is not aligned to {align}"
            ));
        }
        if off < 8 || off + len > adb.len() {
            return Err(format!(
                "{at}: value {v:#010x} needs bytes {off}..{} of an ADB block of {}",
                off + len,
                adb.len()
            ));
        }
        Ok(())
    };
    Ok(match v >> 28 {
        0 if v == 0 => Value::Null,
        0 => {
            return Err(format!(
                "{at}: special value {v:#x} has no place in a package"
            ));
        }
        1 => Value::Int(u64::from(off as u32)),
        2 => {
            need(4, 4)?;
            Value::Int(u64::from(u32_at(adb, off)?))
        }
        3 => {
            need(8, 4)?;
            Value::Int(u64::from_le_bytes(adb[off..off + 8].try_into().unwrap()))
        }
        t @ (8..=10) => {
            let width = [1, 2, 4][t as usize - 8];
            need(width, width)?;
            let mut len = 0usize;
            for (i, byte) in adb[off..off + width].iter().enumerate() {
                len |= (*byte as usize) << (8 * i);
            }
            if len == 0 {
                return Err(format!("{at}: empty blob (apk writes none instead)"));
            }
            need(width + len, width)?;
            Value::Blob(adb[off + width..off + width + len].to_vec())
        }
        0xd | 0xe => {
            need(4, 4)?;
            let n = u32_at(adb, off)? as usize;
            if n < 2 {
                return Err(format!(
                    "{at}: object with {n} slots (apk writes none instead)"
                ));
            }
            need(4 * n, 4)?;
            let mut slots = Vec::with_capacity(n - 1);
            for i in 1..n {
                let s = u32_at(adb, off + 4 * i)?;
                slots.push(value(adb, s, &format!("{at}[{i}]"), depth + 1)?);
            }
            Value::Object(slots)
        }
        t => return Err(format!("{at}: unknown value type {t:#x} in {v:#010x}")),
    })
}

/// Checks that a decoded value has the shape the schema gives its field.
fn check(v: &Value, f: Field, at: &str) -> Result<()> {
    let bad = |what: &str| Err(format!("{at}: expected {what}, found {v:?}"));
    match (f, v) {
        (_, Value::Null) => Ok(()),
        (Field::Text | Field::Multiline | Field::Hex, Value::Blob(_)) => Ok(()),
        (Field::Int | Field::Octal, Value::Int(_)) => Ok(()),
        (Field::Object(fields), Value::Object(slots)) => {
            if slots.len() > fields.len() {
                return Err(format!(
                    "{at}: {} slots where the schema has {}",
                    slots.len(),
                    fields.len()
                ));
            }
            for (s, (name, ff)) in slots.iter().zip(fields.iter()) {
                check(s, *ff, &format!("{at}.{name}"))?;
            }
            Ok(())
        }
        (Field::Dependency, Value::Object(_)) => check(v, Field::Object(DEP), at),
        (Field::Array(item), Value::Object(items)) => {
            for (i, s) in items.iter().enumerate() {
                if *s == Value::Null {
                    return Err(format!("{at}[{}]: empty array item", i + 1));
                }
                check(s, *item, &format!("{at}[{}]", i + 1))?;
            }
            Ok(())
        }
        (Field::Text | Field::Multiline | Field::Hex, _) => bad("a blob"),
        (Field::Int | Field::Octal, _) => bad("an integer"),
        _ => bad("an object"),
    }
}

fn inflate(raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| format!("deflate stream after ADBd: {e}"))?;
    Ok(out)
}

impl Package {
    pub fn read(file: &[u8]) -> Result<Package> {
        let (compression, bytes) = match file.get(..4) {
            Some(b"ADB.") => ("none", file.to_vec()),
            Some(b"ADBd") => ("deflate", inflate(&file[4..])?),
            Some(b"ADBc") => {
                return Err("ADBc (compression named in the header): not used by OpenWrt".into());
            }
            _ => {
                return Err(format!(
                    "not an APKv3 package: starts with {:?}",
                    &file[..file.len().min(4)]
                ));
            }
        };
        if bytes.get(..4) != Some(b"ADB.") {
            return Err("the decompressed stream does not start with ADB.".into());
        }
        let schema: [u8; 4] = bytes
            .get(4..8)
            .ok_or("file header cut short")?
            .try_into()
            .unwrap();
        let mut at = 8;
        let mut adb = None;
        let mut data_blocks = Vec::new();
        while at < bytes.len() {
            let head = u32_at(&bytes, at)?;
            let (kind, raw) = (head >> 30, (head & 0x3fff_ffff) as usize);
            if kind == 3 {
                return Err(format!(
                    "block at {at}: extended (16-byte header) blocks are for payloads over 1 GB"
                ));
            }
            if raw < 4 || at + raw > bytes.len() {
                return Err(format!(
                    "block at {at}: size {raw} runs past the end of the package ({} bytes)",
                    bytes.len()
                ));
            }
            let body = &bytes[at + 4..at + raw];
            let end = (at + raw).next_multiple_of(8);
            if end > bytes.len() {
                return Err(format!("block at {at}: padding cut short"));
            }
            if bytes[at + raw..end.min(bytes.len())]
                .iter()
                .any(|&b| b != 0)
            {
                return Err(format!("block at {at}: padding is not zeros"));
            }
            match kind {
                0 if adb.is_none() && data_blocks.is_empty() => adb = Some(body.to_vec()),
                0 => return Err(format!("block at {at}: a second ADB block")),
                1 if adb.is_some() && data_blocks.is_empty() => {} // a signature
                2 if adb.is_some() => {
                    if body.len() < 8 {
                        return Err(format!(
                            "data block at {at}: {} bytes, shorter than its header",
                            body.len()
                        ));
                    }
                    data_blocks.push((u32_at(body, 0)?, u32_at(body, 4)?, body[8..].to_vec()));
                }
                _ => return Err(format!("block at {at}: type {kind} out of order")),
            }
            at = end;
        }
        let adb = adb.ok_or("no ADB block")?;
        if adb.len() < 8 {
            return Err(format!("ADB block of {} bytes has no header", adb.len()));
        }
        if adb[0] != 0 {
            return Err(format!(
                "ADB compat version {} (this reader knows 0)",
                adb[0]
            ));
        }
        let root = value(&adb, u32_at(&adb, 4)?, "root", 0)?;
        check(&root, Field::Object(PACKAGE), "root")?;
        let pkg = Package {
            compression,
            schema,
            adb,
            root,
            data_blocks,
        };
        if &pkg.schema != b"pckg" {
            return Err(format!("schema {:?}, not pckg", pkg.schema));
        }
        pkg.check_digest()?;
        pkg.files()?;
        Ok(pkg)
    }

    /// A package file, or the test fails naming it and what is wrong.
    pub fn read_file(path: &std::path::Path) -> Package {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Package::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn info(&self, name: &str) -> &Value {
        let i = INFO
            .iter()
            .position(|f| f.0 == name)
            .expect("an info field");
        self.root.slot(1).slot(i + 1)
    }

    pub fn info_text(&self, name: &str) -> String {
        self.info(name).text().unwrap_or_default()
    }

    pub fn depends(&self) -> Vec<String> {
        self.info("depends")
            .items()
            .iter()
            .map(|d| d.slot(1).text().unwrap_or_default())
            .collect()
    }

    pub fn script(&self, name: &str) -> Option<String> {
        let i = SCRIPTS.iter().position(|f| f.0 == name).expect("a script");
        self.root.slot(3).slot(i + 1).text()
    }

    /// `info.hashes`: the first 20 bytes of the SHA-256 of the ADB block
    /// with those bytes zero.
    fn check_digest(&self) -> Result<()> {
        let Some(id) = self.info("hashes").blob() else {
            return Err("info.hashes missing".into());
        };
        // Where the blob's bytes are: root slot 1 (info), its slot 3,
        // past the one-byte length (read() checked every offset on the way).
        let off = |v: u32| (v & 0x0fff_ffff) as usize;
        let info = u32_at(&self.adb, off(u32_at(&self.adb, 4)?) + 4)?;
        let pos = off(u32_at(&self.adb, off(info) + 4 * 3)?) + 1;
        let mut zeroed = self.adb.clone();
        zeroed[pos..pos + id.len()].fill(0);
        let want = Sha256::digest(&zeroed);
        if want[..id.len()] != *id {
            return Err(format!(
                "info.hashes {} is not the digest of the ADB block ({})",
                hex(id),
                hex(&want[..id.len()])
            ));
        }
        Ok(())
    }

    /// Every file with its data, each data block matched to its file.
    pub fn files(&self) -> Result<Vec<File>> {
        let mut files = Vec::new();
        let mut blocks = self.data_blocks.iter().peekable();
        let mut installed = 0;
        for (di, dir) in self.root.slot(2).items().iter().enumerate() {
            let dname = dir.slot(1).text().unwrap_or_default();
            for (fi, f) in dir.slot(3).items().iter().enumerate() {
                let name = f
                    .slot(1)
                    .text()
                    .ok_or(format!("path {dname}: a file without a name"))?;
                let path = if dname.is_empty() {
                    name.clone()
                } else {
                    format!("{dname}/{name}")
                };
                let size = f.slot(3).int().unwrap_or(0);
                let acl = f.slot(2);
                let target = f.slot(6).blob();
                let link = match target {
                    Some(t)
                        if t.len() > 2
                            && u16::from_le_bytes([t[0], t[1]]) & 0o170000 == 0o120000 =>
                    {
                        Some(String::from_utf8_lossy(&t[2..]).into_owned())
                    }
                    Some(t) => {
                        return Err(format!(
                            "{path}: target of a kind tests do not expect ({})",
                            hex(t)
                        ));
                    }
                    None => None,
                };
                let mut data = Vec::new();
                if link.is_none() {
                    installed += size;
                    if size > 0 {
                        let want = (di as u32 + 1, fi as u32 + 1);
                        let Some((p, i, d)) = blocks.next() else {
                            return Err(format!("{path}: no data block"));
                        };
                        if (*p, *i) != want {
                            return Err(format!(
                                "{path}: data block names path {p} file {i}, expected {want:?}"
                            ));
                        }
                        data = d.clone();
                    }
                    if data.len() as u64 != size {
                        return Err(format!(
                            "{path}: {} bytes of data for size {size}",
                            data.len()
                        ));
                    }
                    let hash = f.slot(5).blob().ok_or(format!("{path}: no hash"))?;
                    if Sha256::digest(&data)[..] != *hash {
                        return Err(format!("{path}: data does not match its SHA-256"));
                    }
                }
                files.push(File {
                    path,
                    mode: acl.slot(1).int().unwrap_or(0) as u32,
                    user: acl.slot(2).text().unwrap_or_default(),
                    group: acl.slot(3).text().unwrap_or_default(),
                    size,
                    mtime: f.slot(4).int().unwrap_or(0),
                    link,
                    data,
                });
            }
        }
        if let Some((p, i, _)) = blocks.next() {
            return Err(format!(
                "data block for path {p} file {i} belongs to no file"
            ));
        }
        let declared = self.info("installed-size").int().unwrap_or(0);
        if declared != installed.max(1) {
            return Err(format!(
                "installed-size {declared}, files add up to {installed}"
            ));
        }
        Ok(files)
    }

    /// Directories in the package, with their modes.
    pub fn dirs(&self) -> Vec<(String, u32)> {
        self.root
            .slot(2)
            .items()
            .iter()
            .map(|d| {
                (
                    d.slot(1).text().unwrap_or_default(),
                    d.slot(2).slot(1).int().unwrap_or(0) as u32,
                )
            })
            .collect()
    }

    /// The text `apk adbdump` prints for this package.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let schema = u32::from_le_bytes(self.schema);
        writeln!(out, "#%SCHEMA: {schema:08X}").unwrap();
        writeln!(
            out,
            "# ADB block, size: {}, compat: {}, ver: {}",
            self.adb.len(),
            self.adb[0],
            self.adb[1]
        )
        .unwrap();
        dump_fields(&mut out, &self.root, PACKAGE, 0, false);
        for (_, _, d) in &self.data_blocks {
            writeln!(out, "# data block, size: {}", d.len() + 8).unwrap();
        }
        out
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One object's fields, apk's YAML style: `key: value`, nested objects
/// indented by two, array items behind `- `. `first_dash` puts the array
/// item's dash before the first key.
fn dump_fields(
    out: &mut String,
    v: &Value,
    fields: &[(&str, Field)],
    indent: usize,
    first_dash: bool,
) {
    let mut first = true;
    for (slot, (name, f)) in v.items().iter().zip(fields.iter()) {
        if *slot == Value::Null {
            continue;
        }
        let pad = if first && first_dash {
            format!("{}- ", "  ".repeat(indent - 1))
        } else {
            "  ".repeat(indent)
        };
        first = false;
        out.push_str(&pad);
        out.push_str(name);
        out.push(':');
        dump_value(out, slot, *f, indent);
    }
}

fn dump_value(out: &mut String, v: &Value, f: Field, indent: usize) {
    match f {
        Field::Object(fields) => {
            out.push('\n');
            dump_fields(out, v, fields, indent + 1, false);
        }
        Field::Array(item) => {
            let items = v.items();
            writeln!(out, " # {} items", items.len()).unwrap();
            for it in items {
                match item {
                    Field::Object(fields) => dump_fields(out, it, fields, indent + 2, true),
                    _ => {
                        out.push_str(&"  ".repeat(indent + 1));
                        out.push_str("- ");
                        scalar(out, it, *item, indent + 1);
                    }
                }
            }
        }
        _ => {
            out.push(' ');
            scalar(out, v, f, indent);
        }
    }
}

fn scalar(out: &mut String, v: &Value, f: Field, indent: usize) {
    let text = match (f, v) {
        (Field::Int, Value::Int(n)) => n.to_string(),
        (Field::Octal, Value::Int(0)) => "0".into(),
        (Field::Octal, Value::Int(n)) => format!("0{n:o}"),
        (Field::Hex, Value::Blob(b)) => hex(b),
        (Field::Dependency, d) => {
            let name = d.slot(1).text().unwrap_or_default();
            let m = d.slot(3).int().unwrap_or(0);
            if m & 16 != 0 {
                format!("!{name}")
            } else {
                name
            }
        }
        (_, v) => v.text().unwrap_or_default(),
    };
    // apk quotes like YAML: a block for long, multi-line or ' #' text,
    // single quotes for text starting with an indicator or holding ': '.
    let block = matches!(f, Field::Multiline)
        || text.len() >= 80
        || text.contains(['\n', '\r', '\''])
        || text.contains(" #");
    if block {
        out.push_str("|\n");
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            writeln!(out, "{}{line}", "  ".repeat(indent + 1)).unwrap();
        }
    } else if text.starts_with(|c| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        || text.contains(": ")
        || text.contains('#')
    {
        writeln!(out, "'{text}'").unwrap();
    } else {
        writeln!(out, "{text}").unwrap();
    }
}
