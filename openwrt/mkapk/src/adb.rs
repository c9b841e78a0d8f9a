//! The ADB container of APKv3 (apk-v3(5)): a database of little-endian
//! 32-bit values, each a type in its top four bits and an inline integer
//! or an offset into the database in the rest, written into blocks.
//!
//! The writer lays values out the way apk-tools 3 does, so that the same
//! calls in the same order give the same bytes as `apk mkpkg`: values
//! are appended in the order they are written, each aligned to its own
//! size, and a value whose bytes were written before (at a suitable
//! alignment) is not written again but referred to. The format itself
//! would accept any layout; this one is a choice we keep for byte-for-byte
//! comparison with packages the real tool made.

use std::collections::HashMap;

/// A value: type in bits 28..32, inline value or offset in bits 0..28.
pub type Val = u32;

pub const NULL: Val = 0;
const TYPE_INT: u32 = 0x1000_0000;
const TYPE_INT_32: u32 = 0x2000_0000;
const TYPE_INT_64: u32 = 0x3000_0000;
const TYPE_BLOB_8: u32 = 0x8000_0000;
const TYPE_BLOB_16: u32 = 0x9000_0000;
const TYPE_BLOB_32: u32 = 0xa000_0000;
/// apk-tools writes arrays with the object type too (only the schema
/// tells them apart), so this writer never uses the array type 0xd.
const TYPE_OBJECT: u32 = 0xe000_0000;
const VALUE_MASK: u32 = 0x0fff_ffff;
/// Integers at or above this do not fit inline.
const INLINE_LIMIT: u64 = 0x1000_0000;

/// Block types (the top two bits of a block header).
pub const BLOCK_ADB: u32 = 0;
pub const BLOCK_DATA: u32 = 2;
/// Blocks start at multiples of eight bytes in the file.
pub const BLOCK_ALIGN: usize = 8;
/// The largest block a plain four-byte header can describe.
const BLOCK_MAX: u64 = 0x3fff_ffff - 4;

/// The header of the database itself: compat version, version, two
/// reserved bytes, then the root value.
const HEADER_LEN: usize = 8;
const ROOT_AT: usize = 4;

pub struct Db {
    bytes: Vec<u8>,
    /// Bytes written so far, by content, with where they were written.
    seen: HashMap<Vec<u8>, usize>,
}

#[derive(Debug)]
pub struct TooLarge;

impl Db {
    pub fn new() -> Db {
        let mut db = Db {
            bytes: Vec::new(),
            seen: HashMap::new(),
        };
        db.append(&[0; HEADER_LEN], HEADER_LEN);
        db
    }

    fn append(&mut self, data: &[u8], align: usize) -> usize {
        let pad = self.bytes.len().next_multiple_of(align) - self.bytes.len();
        self.bytes.resize(self.bytes.len() + pad, 0);
        let at = self.bytes.len();
        self.bytes.extend_from_slice(data);
        at
    }

    /// Writes `data` once: a second write of the same bytes refers to the
    /// first, unless that one sits at a worse alignment (then the newer
    /// copy is the one later writes refer to, as in apk-tools).
    fn data(&mut self, data: &[u8], align: usize) -> Result<u32, TooLarge> {
        if let Some(&at) = self.seen.get(data)
            && at % align == 0
        {
            return Ok(at as u32);
        }
        let at = self.append(data, align);
        self.seen.insert(data.to_vec(), at);
        offset(at)
    }

    pub fn int(&mut self, v: u64) -> Result<Val, TooLarge> {
        if v < INLINE_LIMIT {
            Ok(TYPE_INT | v as u32)
        } else if let Ok(v32) = u32::try_from(v) {
            Ok(TYPE_INT_32 | self.data(&v32.to_le_bytes(), 4)?)
        } else {
            // apk-tools aligns 64-bit integers to four bytes only.
            Ok(TYPE_INT_64 | self.data(&v.to_le_bytes(), 4)?)
        }
    }

    /// A blob with its length in front; an empty blob is no value at all.
    pub fn blob(&mut self, b: &[u8]) -> Result<Val, TooLarge> {
        match self.blob_bytes(b) {
            None => Ok(NULL),
            Some((ty, bytes, align)) => Ok(ty | self.data(&bytes, align)?),
        }
    }

    /// A blob written fresh and never shared, for bytes filled in later
    /// (the package's own digest).
    pub fn blob_unshared(&mut self, b: &[u8]) -> Result<(Val, usize), TooLarge> {
        let (ty, bytes, align) = self.blob_bytes(b).ok_or(TooLarge)?;
        let at = self.append(&bytes, align);
        Ok((ty | offset(at)?, at + align))
    }

    fn blob_bytes(&self, b: &[u8]) -> Option<(u32, Vec<u8>, usize)> {
        let (ty, mut bytes, align) = match b.len() {
            0 => return None,
            n if n <= 0xff => (TYPE_BLOB_8, vec![n as u8], 1),
            n if n <= 0xffff => (TYPE_BLOB_16, (n as u16).to_le_bytes().to_vec(), 2),
            n => (TYPE_BLOB_32, (n as u32).to_le_bytes().to_vec(), 4),
        };
        bytes.extend_from_slice(b);
        Some((ty, bytes, align))
    }

    /// An object (or array): its slots, trailing empty ones dropped, led
    /// by their count; with nothing in it, no value at all.
    pub fn object(&mut self, slots: &[Val]) -> Result<Val, TooLarge> {
        let used = slots.iter().rposition(|&v| v != NULL).map_or(0, |i| i + 1);
        if used == 0 {
            return Ok(NULL);
        }
        let mut bytes = Vec::with_capacity(4 * (used + 1));
        bytes.extend_from_slice(&(used as u32 + 1).to_le_bytes());
        for v in &slots[..used] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Ok(TYPE_OBJECT | self.data(&bytes, 4)?)
    }

    pub fn set_root(&mut self, root: Val) {
        self.bytes[ROOT_AT..ROOT_AT + 4].copy_from_slice(&root.to_le_bytes());
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

fn offset(at: usize) -> Result<u32, TooLarge> {
    u32::try_from(at)
        .ok()
        .filter(|&o| o & !VALUE_MASK == 0)
        .ok_or(TooLarge)
}

/// A block's header, then `len` bytes follow, then zeros up to the next
/// multiple of eight.
pub fn block_header(kind: u32, len: u64) -> Result<[u8; 4], TooLarge> {
    if len > BLOCK_MAX {
        return Err(TooLarge);
    }
    Ok(((kind << 30) + 4 + len as u32).to_le_bytes())
}

pub fn block_padding(len: u64) -> usize {
    let raw = 4 + len as usize;
    raw.next_multiple_of(BLOCK_ALIGN) - raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_written_once() {
        let mut db = Db::new();
        let a = db.blob(b"root").unwrap();
        let b = db.blob(b"root").unwrap();
        assert_eq!(a, b);
        assert_eq!(db.bytes().len(), HEADER_LEN + 5);
    }

    #[test]
    fn integers_inline_until_28_bits() {
        let mut db = Db::new();
        assert_eq!(db.int(0o755).unwrap(), 0x1000_01ed);
        let t = db.int(1_767_225_600).unwrap();
        assert_eq!(t >> 28, 2);
        assert_eq!(db.bytes().len(), HEADER_LEN + 4);
    }

    #[test]
    fn empty_objects_and_blobs_are_no_value() {
        let mut db = Db::new();
        assert_eq!(db.object(&[NULL, NULL]).unwrap(), NULL);
        assert_eq!(db.blob(b"").unwrap(), NULL);
        assert_eq!(db.bytes().len(), HEADER_LEN);
    }

    #[test]
    fn objects_drop_trailing_empty_slots() {
        let mut db = Db::new();
        let v = db.object(&[0x1000_0001, NULL, NULL]).unwrap();
        let at = (v & VALUE_MASK) as usize;
        assert_eq!(&db.bytes()[at..], &[2, 0, 0, 0, 1, 0, 0, 0x10]);
    }

    #[test]
    fn misaligned_copies_are_not_shared() {
        let mut db = Db::new();
        // Written at offset 9 as a blob's tail, then wanted at alignment 4.
        db.blob(&[1, 0, 0, 0]).unwrap();
        let o = db.object(&[]).unwrap();
        assert_eq!(o, NULL);
        let v = db.int(0x1000_0000).unwrap();
        assert_eq!((v & VALUE_MASK) as usize % 4, 0);
    }
}
