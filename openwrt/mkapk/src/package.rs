//! The `pckg` schema (apk-package(5)): what a package's ADB block holds,
//! and the file data blocks after it.
//!
//! Fields are written in the order `apk mkpkg` 3.0.6 writes them (info
//! fields by index; per directory its files, then the directory; then
//! installed size, digest, info, paths, scripts), which decides where each
//! value lands; see adb.rs for why the layout is kept.

use crate::adb::{self, Db, NULL, TooLarge, Val};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The schema's name in the file header: "pckg".
pub const SCHEMA: &[u8; 4] = b"pckg";

/// Info fields by their index in the schema; `hashes` (3),
/// `installed-size` (12) and `file-size` (13) are computed, not given.
pub const INFO_FIELDS: &[(&str, usize, Kind)] = &[
    ("name", 1, Kind::Name),
    ("version", 2, Kind::Text),
    ("description", 4, Kind::Text),
    ("arch", 5, Kind::Text),
    ("license", 6, Kind::Text),
    ("origin", 7, Kind::Text),
    ("maintainer", 8, Kind::Text),
    ("url", 9, Kind::Text),
    ("build-time", 11, Kind::Number),
    ("provider-priority", 14, Kind::Number),
    ("depends", 15, Kind::Deps),
    ("provides", 16, Kind::Deps),
    ("replaces", 17, Kind::Deps),
    ("install-if", 18, Kind::Deps),
    ("recommends", 19, Kind::Deps),
    ("layer", 20, Kind::Number),
];
const INFO_SLOTS: usize = 21;
const INFO_HASHES: usize = 3;
const INFO_INSTALLED_SIZE: usize = 12;
/// apk keeps a SHA-1-sized package id: the first 20 bytes of the SHA-256
/// of the ADB block, computed with these bytes zero.
const ID_LEN: usize = 20;

/// Script slots, by index.
pub const SCRIPTS: &[&str] = &[
    "trigger",
    "pre-install",
    "post-install",
    "pre-deinstall",
    "post-deinstall",
    "pre-upgrade",
    "post-upgrade",
];

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Name,
    Text,
    Number,
    Deps,
}

/// What the package is made of, as the command line gave it.
pub struct Spec {
    /// Info fields: index and text.
    pub info: Vec<(usize, String)>,
    /// Scripts: index (1-based) and contents.
    pub scripts: Vec<(usize, Vec<u8>)>,
    pub files: Option<PathBuf>,
    /// Owner and group names to record for every entry, instead of the
    /// names of the files' owners on this machine.
    pub owner: Option<String>,
    pub group: Option<String>,
    /// SOURCE_DATE_EPOCH: every mtime becomes this, as in apk-tools.
    pub mtime: Option<u64>,
}

#[derive(Debug)]
pub enum Error {
    Io(PathBuf, io::Error),
    Invalid(String),
    TooLarge,
}

impl From<TooLarge> for Error {
    fn from(_: TooLarge) -> Error {
        Error::TooLarge
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Invalid(s) => f.write_str(s),
            Error::TooLarge => f.write_str("the package is too large for one ADB block"),
        }
    }
}

/// A file whose contents go into a data block.
struct Payload {
    path: PathBuf,
    size: u64,
    /// 1-based indexes of its directory in `paths` and of it in the
    /// directory's files, as the data block's header names them.
    dir_index: u32,
    file_index: u32,
}

/// The finished package: the ADB block, then data blocks.
pub struct Package {
    db: Db,
    payloads: Vec<Payload>,
}

struct Names {
    owner: Option<String>,
    group: Option<String>,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn new(spec: &Spec) -> Names {
        Names {
            owner: spec.owner.clone(),
            group: spec.group.clone(),
            users: id_names("/etc/passwd"),
            groups: id_names("/etc/group"),
        }
    }

    fn user(&self, uid: u32) -> String {
        self.owner
            .clone()
            .or_else(|| self.users.get(&uid).cloned())
            .unwrap_or_else(|| uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.group
            .clone()
            .or_else(|| self.groups.get(&gid).cloned())
            .unwrap_or_else(|| gid.to_string())
    }
}

/// name:x:id:... lines of /etc/passwd or /etc/group.
fn id_names(file: &str) -> HashMap<u32, String> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        if let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next())
            && let Ok(id) = id.parse()
        {
            names.entry(id).or_insert_with(|| name.to_string());
        }
    }
    names
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Io(p.to_path_buf(), e)
}

/// Directory paths under `root`, relative, sorted bytewise (the root
/// itself, "", first), following no symlinks.
fn directories(root: &Path) -> Result<Vec<String>, Error> {
    let mut found = vec![String::new()];
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        for name in entries(&root.join(&rel))? {
            let path = join(&rel, &name);
            let meta = fs::symlink_metadata(root.join(&path)).map_err(io_err(root))?;
            if meta.is_dir() {
                found.push(path.clone());
                todo.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A directory's entries, sorted bytewise, as UTF-8 names.
fn entries(dir: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().into_string().map_err(|n| {
            Error::Invalid(format!("{}: file name {n:?} is not UTF-8", dir.display()))
        })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

fn sha256(path: &Path) -> Result<[u8; 32], Error> {
    let data = fs::read(path).map_err(io_err(path))?;
    Ok(Sha256::digest(&data).into())
}

/// S_IFMT bits of a mode, as apk records a special file's type.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u16 = 0o100000;

struct Builder<'a> {
    db: Db,
    names: Names,
    spec: &'a Spec,
    installed_size: u64,
    payloads: Vec<Payload>,
    /// Regular files with more than one link, by (device, inode): the
    /// later ones become hard links to the first (a `target` of the
    /// regular-file type and the first one's path).
    links: HashMap<(u64, u64), Val>,
}

impl Builder<'_> {
    fn acl(&mut self, mode: u32, uid: u32, gid: u32) -> Result<Val, Error> {
        let mode = self.db.int(u64::from(mode))?;
        let user = self.db.blob(self.names.user(uid).as_bytes())?;
        let group = self.db.blob(self.names.group(gid).as_bytes())?;
        // Extended attributes (slot 4) are not recorded.
        Ok(self.db.object(&[mode, user, group])?)
    }

    /// One entry of a directory, written as file `index` of directory
    /// `dir_index` (1-based, as data blocks name them); None for what a
    /// package does not hold (directories, sockets).
    fn file(
        &mut self,
        root: &Path,
        dir: &str,
        name: &str,
        (dir_index, file_index): (u32, u32),
    ) -> Result<Option<Val>, Error> {
        let path = root.join(join(dir, name));
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        let mut hash = None;
        let mut target = None;
        let mut link = None;
        if ft.is_dir() {
            return Ok(None);
        } else if ft.is_file() {
            hash = Some(sha256(&path)?);
            let key = (meta.dev(), meta.ino());
            match self.links.get(&key) {
                Some(&first) if meta.nlink() > 1 => link = Some(first),
                _ => {
                    if meta.nlink() > 1 {
                        // apk names the first link from the directory it
                        // walked, "." for the top.
                        let mut t = S_IFREG.to_le_bytes().to_vec();
                        let at = if dir.is_empty() { "." } else { dir };
                        t.extend_from_slice(format!("{at}/{name}").as_bytes());
                        let v = self.db.blob(&t)?;
                        self.links.insert(key, v);
                    }
                    self.installed_size += meta.len();
                }
            }
        } else if ft.is_symlink() {
            let to = fs::read_link(&path).map_err(io_err(&path))?;
            let mut t = ((meta.mode() & S_IFMT) as u16).to_le_bytes().to_vec();
            t.extend_from_slice(to.as_os_str().as_encoded_bytes());
            target = Some(t);
        } else if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() {
            let mut t = ((meta.mode() & S_IFMT) as u16).to_le_bytes().to_vec();
            t.extend_from_slice(&meta.rdev().to_le_bytes());
            target = Some(t);
        } else {
            eprintln!("mkapk: {}: special file ignored", path.display());
            return Ok(None);
        }
        let name_v = self.db.blob(name.as_bytes())?;
        let hash_v = match hash {
            Some(h) => self.db.blob(&h)?,
            None => NULL,
        };
        let target_v = match (&target, link) {
            (Some(t), _) => self.db.blob(t)?,
            (None, Some(v)) => v,
            (None, None) => NULL,
        };
        let mtime = self.spec.mtime.unwrap_or(meta.mtime().max(0) as u64);
        let mtime_v = self.db.int(mtime)?;
        let size_v = self.db.int(meta.len())?;
        let acl = self.acl(meta.mode() & 0o7777, meta.uid(), meta.gid())?;
        let file = self
            .db
            .object(&[name_v, acl, size_v, mtime_v, hash_v, target_v])?;
        if target_v == NULL && meta.len() > 0 {
            self.payloads.push(Payload {
                path,
                size: meta.len(),
                dir_index,
                file_index,
            });
        }
        Ok(Some(file))
    }

    fn directory(&mut self, root: &Path, dir: &str, index: u32) -> Result<Val, Error> {
        let here = root.join(dir);
        let mut files = Vec::new();
        for name in entries(&here)? {
            let at = (index, files.len() as u32 + 1);
            if let Some(f) = self.file(root, dir, &name, at)? {
                files.push(f);
            }
        }
        let meta = fs::symlink_metadata(&here).map_err(io_err(&here))?;
        let name = self.db.blob(dir.as_bytes())?;
        let acl = self.acl(meta.mode() & !S_IFMT, meta.uid(), meta.gid())?;
        let files = self.db.object(&files)?;
        Ok(self.db.object(&[name, acl, files])?)
    }
}

/// Dependencies as `apk mkpkg` takes them: words, each a name with an
/// optional leading `!` (a conflict). Version constraints are not needed
/// by this project and are refused rather than half supported.
fn deps(db: &mut Db, text: &str) -> Result<Val, Error> {
    // apk's match bits: equal | less | greater (any version), conflict.
    const ANY: u64 = 1 | 2 | 4;
    const CONFLICT: u64 = 16;
    let mut items: Vec<(String, u64, Val)> = Vec::new();
    for word in text.split_whitespace() {
        let (name, conflict) = match word.strip_prefix('!') {
            Some(n) => (n, true),
            None => (word, false),
        };
        if name.is_empty() || name.contains(['<', '>', '=', '~']) {
            return Err(Error::Invalid(format!(
                "dependency '{word}': only names (and !name) are supported"
            )));
        }
        let name_v = db.blob(name.as_bytes())?;
        let obj = if conflict {
            let m = db.int(ANY | CONFLICT)?;
            db.object(&[name_v, NULL, m])?
        } else {
            db.object(&[name_v])?
        };
        items.push((name.to_string(), u64::from(conflict), obj));
    }
    // Sorted by name then match, duplicates dropped, as apk keeps them.
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    items.dedup_by_key(|i| i.2);
    let vals: Vec<Val> = items.iter().map(|i| i.2).collect();
    Ok(db.object(&vals)?)
}

fn valid_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c))
}

pub fn build(spec: &Spec) -> Result<Package, Error> {
    let mut b = Builder {
        db: Db::new(),
        names: Names::new(spec),
        spec,
        installed_size: 0,
        payloads: Vec::new(),
        links: HashMap::new(),
    };
    let mut info = [NULL; INFO_SLOTS];
    let mut given: Vec<&(usize, String)> = spec.info.iter().collect();
    given.sort_by_key(|(i, _)| *i);
    for &&(i, ref text) in &given {
        let kind = INFO_FIELDS.iter().find(|f| f.1 == i).map(|f| f.2);
        info[i - 1] = match kind {
            Some(Kind::Name) if !valid_name(text) => {
                return Err(Error::Invalid(format!(
                    "package name '{text}' is not valid"
                )));
            }
            Some(Kind::Number) => {
                let n = text
                    .parse()
                    .map_err(|_| Error::Invalid(format!("'{text}' is not a number")))?;
                b.db.int(n)?
            }
            Some(Kind::Deps) => deps(&mut b.db, text)?,
            _ => b.db.blob(text.as_bytes())?,
        };
    }
    for (field, index) in [("name", 1), ("version", 2), ("arch", 5)] {
        if !given.iter().any(|(i, _)| *i == index) {
            return Err(Error::Invalid(format!(
                "required info field '{field}' not provided"
            )));
        }
    }
    let mut paths = Vec::new();
    if let Some(root) = &spec.files {
        for (i, dir) in directories(root)?.iter().enumerate() {
            paths.push(b.directory(root, dir, i as u32 + 1)?);
        }
        b.installed_size = b.installed_size.max(1);
    }
    if !spec.scripts.is_empty() {
        b.installed_size = b.installed_size.max(1);
    }
    info[INFO_INSTALLED_SIZE - 1] = b.db.int(b.installed_size)?;
    let (hashes, id_at) = b.db.blob_unshared(&[0; ID_LEN])?;
    info[INFO_HASHES - 1] = hashes;
    let info = b.db.object(&info)?;
    let paths = b.db.object(&paths)?;
    let mut scripts = NULL;
    if !spec.scripts.is_empty() {
        let mut slots = [NULL; 7];
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some((_, text)) = spec.scripts.iter().find(|s| s.0 == i + 1) {
                *slot = b.db.blob(text)?;
            }
        }
        scripts = b.db.object(&slots)?;
    }
    let root = b.db.object(&[info, paths, scripts])?;
    b.db.set_root(root);
    let id: [u8; 32] = Sha256::digest(b.db.bytes()).into();
    b.db.bytes_mut()[id_at..id_at + ID_LEN].copy_from_slice(&id[..ID_LEN]);
    Ok(Package {
        db: b.db,
        payloads: b.payloads,
    })
}

impl Package {
    /// The whole uncompressed package: file header, ADB block, data
    /// blocks in path order.
    pub fn write(&self, out: &mut impl Write) -> Result<(), Error> {
        let w = |e| Error::Io(PathBuf::from("output"), e);
        out.write_all(b"ADB.").map_err(w)?;
        out.write_all(SCHEMA).map_err(w)?;
        let adb_bytes = self.db.bytes();
        let len = adb_bytes.len() as u64;
        out.write_all(&adb::block_header(adb::BLOCK_ADB, len)?)
            .map_err(w)?;
        out.write_all(adb_bytes).map_err(w)?;
        out.write_all(&[0; 8][..adb::block_padding(len)])
            .map_err(w)?;
        for p in &self.payloads {
            let data = fs::read(&p.path).map_err(io_err(&p.path))?;
            if data.len() as u64 != p.size {
                return Err(Error::Invalid(format!(
                    "{} changed while it was packed",
                    p.path.display()
                )));
            }
            let len = 8 + p.size;
            out.write_all(&adb::block_header(adb::BLOCK_DATA, len)?)
                .map_err(w)?;
            out.write_all(&p.dir_index.to_le_bytes()).map_err(w)?;
            out.write_all(&p.file_index.to_le_bytes()).map_err(w)?;
            out.write_all(&data).map_err(w)?;
            out.write_all(&[0; 8][..adb::block_padding(len)])
                .map_err(w)?;
        }
        Ok(())
    }
}
