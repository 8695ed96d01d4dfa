//! What the machine writes out: crash dumps, a symbol store with nt's and
//! the drivers' PDBs, and the image files WinDbg would find beside them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::dump::{self, DumpKind};

use super::Machine;

impl Machine {
    /// Write a dump of the machine.
    pub fn write_dump<W: Write>(&self, kind: DumpKind, w: &mut W) -> io::Result<u64> {
        dump::write_dump(&self.mem, kind, &self.header, w)
    }

    pub fn dump_bytes(&self, kind: DumpKind) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_dump(kind, &mut v)
            .expect("writing to a Vec cannot fail");
        v
    }

    /// Write the dump to `path` (buffered).
    pub fn write_dump_file(&self, kind: DumpKind, path: &Path) -> io::Result<u64> {
        let mut w = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        let n = self.write_dump(kind, &mut w)?;
        w.flush()?;
        Ok(n)
    }

    /// Lay out a symbol store `dir/<pdb>/<GUID><AGE>/<pdb>` holding nt's PDB
    /// (and the drivers' PDBs), as symchk and WinDbg's cache do. Returns
    /// the path of nt's PDB.
    pub fn write_symbol_store(&self, dir: &Path) -> io::Result<PathBuf> {
        let files = self.scenario.build.files();
        let nt = store_put(dir, &self.m.pdb.name, &self.m.pdb.store_key, files.pdb)?;
        for d in self.drivers() {
            store_put(dir, &d.info.pdb.name, &d.info.pdb.store_key, d.pdb)?;
        }
        Ok(nt)
    }

    /// Put nt's and the drivers' image files in the symbol store at `dir`
    /// as WinDbg finds binaries: `<file>/<TimeDateStamp><SizeOfImage>/
    /// <file>` (8 hex digits, then the size without leading zeros), under
    /// the names the loaded-module list gives them. Returns the paths.
    pub fn write_image_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut images: Vec<(&str, &[u8])> = Vec::new();
        if let Some(nt) = self.truth.kernel.modules.first() {
            images.push((&nt.base_name, self.scenario.build.files().image));
        }
        for d in self.drivers() {
            images.push((&d.info.file, d.image));
        }
        let mut out = Vec::new();
        for (name, bytes) in images {
            let (stamp, size) = pe_identity(bytes).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: not a PE image"),
                )
            })?;
            out.push(store_put(
                dir,
                name,
                &format!("{stamp:08X}{size:X}"),
                bytes,
            )?);
        }
        Ok(out)
    }
}

/// A PE file's TimeDateStamp and SizeOfImage.
fn pe_identity(b: &[u8]) -> Option<(u32, u32)> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let nt = u32_at(0x3C)? as usize;
    (b.get(nt..nt + 4)? == b"PE\0\0").then_some(())?;
    Some((u32_at(nt + 8)?, u32_at(nt + 0x18 + 0x38)?))
}

fn store_put(dir: &Path, name: &str, key: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let d = dir.join(name).join(key);
    std::fs::create_dir_all(&d)?;
    let p = d.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}
