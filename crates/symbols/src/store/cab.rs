//! Compressed store files (`ntkrnlmp.pd_`): MS-CAB cabinets holding one
//! file, MSZIP- or LZX-compressed, expanded with the `cab` crate after
//! [`check_cabinet`] has checked what that crate would trust.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::request::StoreFile;
use super::types::MAX_DOWNLOAD;
use pooldump_io::bytes::Le;

/// Expand a compressed store file (a CAB holding the PDB) into `store`,
/// verify it and move it into place. Returns the PDB's path.
pub(super) fn expand_file<R: StoreFile + ?Sized>(
    packed: &Path,
    store: &Path,
    req: &R,
) -> Result<PathBuf, String> {
    let f = std::fs::File::open(packed).map_err(|e| format!("cannot open: {e}"))?;
    expand_cab(std::io::BufReader::new(f), store, req)
}

pub(super) fn expand_cab<C: Read + Seek, R: StoreFile + ?Sized>(
    mut reader: C,
    store: &Path,
    req: &R,
) -> Result<PathBuf, String> {
    check_cabinet(&mut reader).map_err(|e| format!("not a valid compressed file (CAB): {e}"))?;
    let mut cab =
        cab::Cabinet::new(reader).map_err(|e| format!("not a valid compressed file (CAB): {e}"))?;
    // The cabinet holds one file, the PDB (its name as stored); at most
    // 65535 entries (CFHEADER's cFiles is 16 bits).
    let entries: Vec<(String, u64)> = cab
        .folder_entries()
        .flat_map(|f| f.file_entries())
        .map(|e| (e.name().to_string(), u64::from(e.uncompressed_size())))
        .collect();
    let wanted = req.file_name().as_str();
    let entry = entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
        .or(entries.first())
        .cloned();
    let Some((name, size)) = entry else {
        return Err("the compressed file (CAB) holds no file".into());
    };
    if size > MAX_DOWNLOAD {
        return Err(format!(
            "the compressed file expands to {size} bytes, more than the {MAX_DOWNLOAD}-byte limit"
        ));
    }
    let dest = req.path_in(store);
    let dir = dest.parent().unwrap_or(store);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pooldump-expand-")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot create a file in {}: {}",
                dir.display(),
                pooldump_io::fsio::without_temp_path(e)
            )
        })?;
    let mut r = cab
        .read_file(&name)
        .map_err(|e| format!("cannot expand {name}: {e}"))?
        // One byte past the size the CAB states tells a longer file; a
        // small stated size cannot be made to expand to the 1 GiB cap.
        .take(size + 1);
    let n = std::io::copy(&mut r, &mut tmp).map_err(|e| format!("cannot expand {name}: {e}"))?;
    if n != size {
        return Err(format!(
            "{name} expanded to {n} bytes, not the {size} the CAB states"
        ));
    }
    tmp.flush().map_err(|e| e.to_string())?;
    req.check(tmp.path())?;
    tmp.persist(&dest)
        .map_err(|e| format!("cannot move the expanded file into place: {}", e.error))?;
    Ok(dest)
}

/// Check what the `cab` crate (0.6) trusts without checking: that each
/// file starts within the data its folder holds. A file whose
/// `uoffFolderStart` lies past the folder's last CFDATA block makes
/// `Cabinet::read_file` index past its block list and panic (found by the
/// cab_store fuzz target). The tables are read as MS-CAB lays them out:
/// CFHEADER (36 bytes, optional reserve sizes), CFFOLDER entries, CFFILE
/// entries at `coffFiles`, CFDATA blocks from each folder's
/// `coffCabStart`. Cabinets that span files are refused (a symbol store's
/// `.pd_` is one cabinet). The reader is left at the start.
pub fn check_cabinet<C: Read + Seek>(r: &mut C) -> Result<(), String> {
    let mut h = [0u8; 40];
    read_at(r, 0, &mut h[..36])?;
    if Le(&h).bytes(0, 4) != Some(b"MSCF") {
        return Err("no MSCF signature".into());
    }
    let coff_files = u64::from(u32_at(&h, 16));
    let folders = usize::from(u16_at(&h, 26));
    let files = usize::from(u16_at(&h, 28));
    let flags = u16_at(&h, 30);
    if flags & 0x3 != 0 {
        return Err("it continues another cabinet".into());
    }
    let reserve = if flags & 0x4 != 0 {
        read_at(r, 36, &mut h[36..40])?;
        Reserve {
            first_folder: 40 + u64::from(u16_at(&h, 36)),
            per_folder: u64::from(h[38]),
            per_block: u64::from(h[39]),
        }
    } else {
        Reserve {
            first_folder: 36,
            per_folder: 0,
            per_block: 0,
        }
    };
    let sizes = folder_sizes(r, folders, &reserve)?;
    check_files(r, coff_files, files, &sizes)?;
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Where the CFFOLDER entries start, and the per-entry reserved bytes
/// (CFHEADER's optional `cbCFFolder`, `cbCFData`).
struct Reserve {
    first_folder: u64,
    per_folder: u64,
    per_block: u64,
}

/// `n` bytes at `off`, or an error that says the tables run past the end.
fn read_at<C: Read + Seek>(r: &mut C, off: u64, buf: &mut [u8]) -> Result<(), String> {
    r.seek(SeekFrom::Start(off))
        .and_then(|_| r.read_exact(buf))
        .map_err(|_| format!("its tables run past the end of the file (at {off:#x})"))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    Le(b).u16(o).unwrap_or(0)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    Le(b).u32(o).unwrap_or(0)
}

/// Each folder's uncompressed size: the sum of its blocks' `cbUncomp`.
fn folder_sizes<C: Read + Seek>(
    r: &mut C,
    folders: usize,
    reserve: &Reserve,
) -> Result<Vec<u64>, String> {
    let mut sizes = Vec::with_capacity(folders);
    let mut folder_at = reserve.first_folder;
    for k in 0..folders {
        let mut f = [0u8; 8];
        read_at(r, folder_at, &mut f)?;
        folder_at += 8 + reserve.per_folder;
        let mut block_at = u64::from(u32_at(&f, 0));
        // typeCompress 0: the blocks are stored as they are. cab trusts
        // cbUncomp for where a file starts but hands out cbData bytes, so
        // a block that holds fewer bytes than it states sends its reader
        // past the end of the block (a panic in cab 0.6).
        let stored = u16_at(&f, 6) & 0x0F == 0;
        let mut total = 0u64;
        for j in 0..u16_at(&f, 4) {
            let mut d = [0u8; 8];
            read_at(r, block_at, &mut d)?;
            let (held, stated) = (u16_at(&d, 4), u16_at(&d, 6));
            if stored && held != stated {
                return Err(format!(
                    "folder {k} is stored uncompressed, but its data block {j} holds {held:#x} bytes and states {stated:#x}"
                ));
            }
            total += u64::from(stated);
            block_at += 8 + reserve.per_block + u64::from(held);
        }
        sizes.push(total);
    }
    Ok(sizes)
}

/// Each CFFILE entry (from `coff_files`) starts within its folder's data
/// and has a name of at most 256 bytes.
fn check_files<C: Read + Seek>(
    r: &mut C,
    coff_files: u64,
    files: usize,
    sizes: &[u64],
) -> Result<(), String> {
    let mut file_at = coff_files;
    for i in 0..files {
        let mut e = [0u8; 16];
        read_at(r, file_at, &mut e)?;
        let (offset, folder) = (u64::from(u32_at(&e, 4)), usize::from(u16_at(&e, 8)));
        match sizes.get(folder) {
            Some(&size) if offset <= size => {}
            Some(&size) => {
                return Err(format!(
                    "file {i} starts at {offset:#x} in folder {folder}, which holds {size:#x} bytes"
                ));
            }
            None => {
                return Err(format!(
                    "file {i} is in folder {folder}, which does not exist"
                ));
            }
        }
        // The name: NUL-terminated, at most 256 bytes.
        let mut name = [0u8; 257];
        r.seek(SeekFrom::Start(file_at + 16))
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while got < name.len() {
            match r.read(&mut name[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) => return Err(e.to_string()),
            }
        }
        let Some(len) = name[..got].iter().position(|&b| b == 0) else {
            return Err(format!("file {i} has no name within 256 bytes"));
        };
        file_at += 16 + len as u64 + 1;
    }
    Ok(())
}
