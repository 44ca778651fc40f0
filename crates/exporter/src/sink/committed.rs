//! The file sink's committed length, kept durably beside the output file
//! in `<file>.committed`.
//!
//! Bytes of the output file past this length were never confirmed to the
//! broker (their lease was not committed), so at open and after a failed
//! write they are cut: they will be delivered again, and anything left of
//! them would be duplicated or glued onto the next line.
//!
//! Layout: two 64-byte slots at offsets 0 and 512, so that each lies in its
//! own sector and a torn write can damage only the slot being written.
//! Each slot is `magic | seq | len | inode | crc32c` (little endian); the
//! valid slot with the highest `seq` wins. An update writes the other slot
//! and fdatasyncs it, so the last confirmed value survives any crash. The
//! file is created whole (tmp, fsync, rename, directory fsync) and then only
//! updated in place.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"WEIRFSC1";
const SLOT: u64 = 512;
const BODY: usize = 32;
const FILE_LEN: usize = 1024;

/// One decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Bytes of the output file confirmed delivered.
    pub len: u64,
    /// The output file's inode: a record about another file is not used.
    pub ino: u64,
}

impl Record {
    fn encode(&self) -> [u8; BODY + 4] {
        let mut b = [0u8; BODY + 4];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&self.ino.to_le_bytes());
        let crc = crc32c::crc32c(&b[..BODY]);
        b[BODY..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Record> {
        let body = b.get(..BODY)?;
        let crc = u32::from_le_bytes(b.get(BODY..BODY + 4)?.try_into().ok()?);
        if &body[..8] != MAGIC || crc32c::crc32c(body) != crc {
            return None;
        }
        let word = |i: usize| body[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        Some(Record { seq: word(8)?, len: word(16)?, ino: word(24)? })
    }
}

/// `<file>.committed` beside `data`.
pub fn path_for(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_os_string();
    name.push(".committed");
    PathBuf::from(name)
}

/// fsync a directory so that entries created or renamed in it persist.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The last confirmed record, or None when there is no usable one (no file
/// yet, or both slots unreadable).
pub fn load(path: &Path) -> io::Result<Option<Record>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let slot = |i: u64| bytes.get((i * SLOT) as usize..).and_then(Record::decode);
    Ok(match (slot(0), slot(1)) {
        (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
        (a, b) => a.or(b),
    })
}

/// The open `<file>.committed`, updated in place.
pub struct Committed {
    file: File,
    last: Record,
}

impl Committed {
    /// Write a fresh file holding `len` for the output file `ino`, crash-safely.
    pub fn create(path: &Path, len: u64, ino: u64) -> io::Result<Committed> {
        let last = Record { seq: 1, len, ino };
        let mut bytes = vec![0u8; FILE_LEN];
        let slot = (last.seq % 2 * SLOT) as usize;
        bytes[slot..slot + BODY + 4].copy_from_slice(&last.encode());
        let mut tmp_name = path.as_os_str().to_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let f = File::create(&tmp)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(parent_dir(path))?;
        Committed::open(path, last)
    }

    /// Open an existing file whose last confirmed record is `last`.
    pub fn open(path: &Path, last: Record) -> io::Result<Committed> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Committed { file, last })
    }

    pub fn committed(&self) -> u64 {
        self.last.len
    }

    /// Durably record `len`. On error the previous value is still the one in
    /// force (the other slot is untouched) and a retry writes the same slot.
    pub fn store(&mut self, len: u64) -> io::Result<()> {
        let next = Record { seq: self.last.seq + 1, len, ino: self.last.ino };
        self.file.write_all_at(&next.encode(), next.seq % 2 * SLOT)?;
        self.file.sync_data()?;
        self.last = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.committed");
        let mut c = Committed::create(&p, 10, 7).unwrap();
        assert_eq!(load(&p).unwrap(), Some(Record { seq: 1, len: 10, ino: 7 }));
        c.store(20).unwrap();
        c.store(30).unwrap();
        assert_eq!(load(&p).unwrap().map(|r| r.len), Some(30));
        // Tear the newest slot (seq 3 lives in slot 1): the previous value stands.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xAA; 7], SLOT + 20).unwrap();
        assert_eq!(load(&p).unwrap(), Some(Record { seq: 2, len: 20, ino: 7 }));
        f.write_all_at(&[0xAA; 7], 20).unwrap();
        assert_eq!(load(&p).unwrap(), None);
        assert_eq!(load(&dir.path().join("absent")).unwrap(), None);
    }
}
