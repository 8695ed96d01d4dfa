//! Reading a whole input file with a cap on its size.
//!
//! Files the user names (pooltag.txt, a tags file, a snapshot, PoolMon
//! text, a relabel map) are read whole, and any of them can be
//! `/dev/zero`, a FIFO or a 50 GB file by mistake. [`read_capped`] stops
//! after `limit` bytes and says so, and its buffer never grows past the
//! cap (it does not double to twice the cap on the last read), so the
//! memory a hostile file costs is the cap.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a capped read failed. Both cases name the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{}: cannot read {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What it should be (`a pooltag.txt`).
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds more than the cap.
    #[error("{} is larger than {limit} bytes: not {what}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What it should be (`a pooltag.txt`).
        what: &'static str,
        /// The cap, in bytes.
        limit: u64,
    },
}

/// The bytes of the file at `path`, at most `limit` of them. `what` says
/// what the file should be (`a pooltag.txt`), for the messages:
/// `/dev/zero is larger than 16777216 bytes: not a pooltag.txt`.
pub fn read_capped(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // A regular file's length is a good first guess; a device or a pipe
    // says 0 and grows the buffer as it goes.
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    read_capped_from(file, hint, limit).map_err(|e| match e {
        Capped::Io(source) => io(source),
        Capped::TooLarge => ReadError::TooLarge {
            path: path.to_path_buf(),
            what,
            limit,
        },
    })
}

enum Capped {
    Io(std::io::Error),
    TooLarge,
}

fn read_capped_from(mut r: impl Read, hint: u64, limit: u64) -> Result<Vec<u8>, Capped> {
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut buf: Vec<u8> = Vec::new();
    buf.reserve_exact(
        usize::try_from(hint.min(limit))
            .unwrap_or(0)
            .saturating_add(1),
    );
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() > cap {
                return Err(Capped::TooLarge);
            }
            // Grow by half again, never past one byte over the cap (that
            // byte tells a file of exactly `limit` bytes from a longer one).
            let grow = (buf.capacity() / 2)
                .max(64 << 10)
                .min(cap.saturating_add(1) - buf.len());
            buf.reserve_exact(grow);
        }
        let len = buf.len();
        let spare = buf.capacity() - len;
        buf.resize(len + spare, 0);
        let n = loop {
            match r.read(&mut buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Capped::Io(e)),
            }
        };
        buf.truncate(len + n);
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() > cap {
            return Err(Capped::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_at_the_cap_is_read_and_one_byte_more_is_refused() {
        let data = vec![7u8; 200_000];
        let got = read_capped_from(&data[..], 0, 200_000).ok().unwrap();
        assert_eq!(got, data);
        assert!(matches!(
            read_capped_from(&data[..], 0, 199_999),
            Err(Capped::TooLarge)
        ));
    }

    /// An endless reader of zeros that records the largest buffer it was
    /// handed: what it returned so far plus the spare room it is given is
    /// the whole buffer's capacity at that read.
    struct Endless {
        returned: usize,
        largest: usize,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(self.returned + buf.len());
            buf.fill(0);
            self.returned += buf.len();
            Ok(buf.len())
        }
    }

    #[test]
    fn an_endless_input_costs_the_cap_and_no_more() {
        let limit: u64 = 3 << 20;
        let mut r = Endless {
            returned: 0,
            largest: 0,
        };
        assert!(matches!(
            read_capped_from(&mut r, 0, limit),
            Err(Capped::TooLarge)
        ));
        // The buffer never grew past the cap plus the one byte that tells
        // a file of exactly `limit` bytes from a longer one.
        assert!(
            r.largest as u64 <= limit + 1,
            "a {}-byte buffer for a {limit}-byte cap",
            r.largest
        );
        assert!(r.largest as u64 > limit, "{} bytes", r.largest);
    }

    #[test]
    fn errors_name_the_file_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.txt");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        let e = read_capped(&p, 99, "a pooltag.txt").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} is larger than 99 bytes: not a pooltag.txt", p.display())
        );
        let missing = dir.path().join("nope.txt");
        let e = read_capped(&missing, 99, "a tags file").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read a tags file: ", missing.display())),
            "{e}"
        );
        assert_eq!(read_capped(&p, 100, "x").unwrap().len(), 100);
    }
}
