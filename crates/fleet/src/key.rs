//! A dump's content key: what `pooldump batch` uses to know a dump it has
//! already done, without reading a multi-GiB file twice.
//!
//! The key is SHA-256 over the file's size, its first 64 KiB, 16 blocks of
//! 4 KiB spread evenly through the file and its last 4 KiB: at most 132 KiB
//! read per dump, whatever its size. Why that is enough for crash dumps:
//!
//! - The first 8 KiB is the DUMP_HEADER64, which holds the moment of the
//!   crash (SystemTime, 100 ns resolution) and the uptime, the bug check
//!   and its four parameters, the processor count, the CONTEXT of the
//!   crashing processor and the boot's addresses (DirectoryTableBase,
//!   PfnDataBase, PsLoadedModuleList, KdDebuggerDataBlock; randomised at
//!   every boot since Windows 10 1607). Two different crashes cannot share
//!   it; the bitmap (or run list) that follows says which pages were saved.
//! - The size and the sampled blocks catch a dump that was cut short or
//!   damaged in transfer (a different size, a different last block), and
//!   a file replaced by another with a copied header.
//!
//! What the key does not promise: two files that differ only inside pages
//! nobody sampled (bit rot in the middle of a copy) share a key. A resumed
//! batch would treat the damaged copy as done; a whole-file hash would read
//! every byte of every dump again on each resume, which is what the key
//! avoids.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Bytes read from the start: the 8 KiB header and what follows it (a
/// bitmap dump's bitmap, an RDMP's ranges).
const HEAD: u64 = 64 << 10;
/// Sampled blocks through the file, and their size.
const SAMPLES: u64 = 16;
const BLOCK: u64 = 4 << 10;

/// The SHA-256 of a dump's size and sampled contents (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentKey(pub [u8; 32]);

impl ContentKey {
    /// The key of the file at `path` and the file's size.
    pub fn of_file(path: &Path) -> io::Result<(ContentKey, u64)> {
        let mut f = File::open(path)?;
        let size = f.metadata()?.len();
        Ok((Self::of_reader(&mut f, size)?, size))
    }

    /// The key of `size` bytes readable from `r` (a file, or a cursor in
    /// tests).
    pub fn of_reader<R: Read + Seek>(r: &mut R, size: u64) -> io::Result<ContentKey> {
        let mut h = Sha256::new();
        h.update(b"pooldump content key 1\0");
        h.update(size.to_le_bytes());
        let mut buf = vec![0u8; HEAD as usize];
        let mut block = |r: &mut R, h: &mut Sha256, offset: u64, len: u64| -> io::Result<()> {
            let len = len.min(size.saturating_sub(offset));
            if len == 0 {
                return Ok(());
            }
            r.seek(SeekFrom::Start(offset))?;
            let b = &mut buf[..len as usize];
            r.read_exact(b)?;
            h.update(offset.to_le_bytes());
            h.update(&*b);
            Ok(())
        };
        block(r, &mut h, 0, HEAD)?;
        if size > HEAD {
            let step = size / (SAMPLES + 1);
            for i in 1..=SAMPLES {
                let offset = (i * step) & !(BLOCK - 1);
                if offset >= HEAD {
                    block(r, &mut h, offset, BLOCK)?;
                }
            }
            block(r, &mut h, size.saturating_sub(BLOCK).max(HEAD), BLOCK)?;
        }
        Ok(ContentKey(h.finalize().into()))
    }

    /// Lower-case hex, 64 characters.
    pub fn hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A reader that counts the bytes read, to show the key does not read
    /// the whole file.
    struct Counting<'a> {
        inner: Cursor<&'a [u8]>,
        read: u64,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }
    impl Seek for Counting<'_> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    fn key(data: &[u8]) -> (ContentKey, u64) {
        let mut c = Counting {
            inner: Cursor::new(data),
            read: 0,
        };
        let k = ContentKey::of_reader(&mut c, data.len() as u64).unwrap();
        (k, c.read)
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    #[test]
    fn reads_a_bounded_amount_and_tells_files_apart() {
        let big = data(8 << 20, 0);
        let (k, read) = key(&big);
        assert!(read <= HEAD + (SAMPLES + 1) * BLOCK, "read {read} bytes");
        // Same bytes, same key; a changed header, a changed last block,
        // a truncation, a changed sampled block: another key.
        assert_eq!(key(&big).0, k);
        let mut header = big.clone();
        header[0xFA8] ^= 1;
        assert_ne!(key(&header).0, k);
        let mut tail = big.clone();
        *tail.last_mut().unwrap() ^= 1;
        assert_ne!(key(&tail).0, k);
        assert_ne!(key(&big[..big.len() - 4096]).0, k);
        let mut sampled = big.clone();
        let at = ((big.len() as u64 / (SAMPLES + 1)) & !(BLOCK - 1)) as usize;
        sampled[at + 7] ^= 1;
        assert_ne!(key(&sampled).0, k);
        // The documented blind spot: a byte between samples.
        let mut between = big.clone();
        between[at + BLOCK as usize + 100] ^= 1;
        assert_eq!(key(&between).0, k);
    }

    #[test]
    fn small_and_empty_files() {
        assert_ne!(key(&[]).0, key(&[0]).0);
        let small = data(10_000, 3);
        let (k, read) = key(&small);
        assert_eq!(read, 10_000);
        assert_ne!(k, key(&small[..9_999]).0);
        assert_eq!(k.hex().len(), 64);
    }
}
