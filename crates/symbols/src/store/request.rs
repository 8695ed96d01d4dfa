//! What a symbol store is asked for: a PDB by GUID and age, or an image by
//! TimeDateStamp and SizeOfImage, and how a candidate file is checked to be
//! the one wanted before it is used or moved into a store.

use std::path::{Path, PathBuf};

use super::types::MAX_DOWNLOAD;
use crate::guid::Guid;
use crate::key::{image_key, pdb_key};
use crate::name::PdbName;
use crate::pdb::{PdbError, read_identity};

/// The PDB to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbRequest {
    /// The PDB's file name (`ntkrnlmp.pdb`).
    pub name: PdbName,
    /// The PDB's GUID.
    pub guid: Guid,
    /// The PDB's age.
    pub age: u32,
}

impl PdbRequest {
    /// `<GUID><AGE>` with the age upper-case ([`pdb_key`]).
    pub fn key(&self) -> String {
        pdb_key(&self.guid, self.age)
    }

    /// The same with the age lower-case (addr-symbolizer and others).
    pub fn key_lower_age(&self) -> String {
        format!("{}{:x}", self.guid.compact(), self.age)
    }

    /// Where the file sits in a store.
    pub fn store_path(&self, store: &Path) -> PathBuf {
        self.path_in(store)
    }

    /// The compressed file's name: the last character replaced by `_`
    /// (`ntkrnlmp.pd_`).
    pub fn compressed_name(&self) -> String {
        self.packed_name()
    }
}

/// A file a symbol store keeps under `<name>/<key>/<name>`: a PDB (key
/// `<GUID><AGE>`) or an image (key `<TimeDateStamp><SizeOfImage>`, as
/// symstore and WinDbg keep binaries). The lookup (directories, stores,
/// two-tier stores, CAB-compressed files, `file.ptr`, servers) is the same
/// for both; only the key and the check of a candidate differ.
pub trait StoreFile {
    /// The file name (checked to be one safe path component).
    fn file_name(&self) -> &PdbName;
    /// The key directory name.
    fn store_key(&self) -> String;
    /// Another spelling of the key some tools write, if any.
    fn alt_key(&self) -> Option<String> {
        None
    }
    /// What the file is, for messages ("PDB", "image").
    fn what(&self) -> &'static str;
    /// Is the file at `p` the one wanted? Err says why not.
    fn check(&self, p: &Path) -> Result<(), String>;
    /// Where a plain (non-store) directory may hold it.
    fn directory_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        vec![dir.join(self.file_name().as_str())]
    }
    /// Where the file sits in a store.
    fn path_in(&self, store: &Path) -> PathBuf {
        let n = self.file_name().as_str();
        store.join(n).join(self.store_key()).join(n)
    }
    /// The compressed file's name: the last character replaced by `_`
    /// (`ntkrnlmp.pd_`, `ntoskrnl.ex_`).
    fn packed_name(&self) -> String {
        let n = self.file_name().as_str();
        let mut c: String = n
            .chars()
            .take(n.chars().count().saturating_sub(1))
            .collect();
        c.push('_');
        c
    }
}

impl StoreFile for PdbRequest {
    fn file_name(&self) -> &PdbName {
        &self.name
    }
    fn store_key(&self) -> String {
        self.key()
    }
    fn alt_key(&self) -> Option<String> {
        Some(self.key_lower_age())
    }
    fn what(&self) -> &'static str {
        "PDB"
    }
    fn check(&self, p: &Path) -> Result<(), String> {
        verify(p, self)
    }
    fn directory_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        let n = self.name.as_str();
        vec![
            dir.join(n),
            dir.join("symbols").join("pdb").join(n),
            dir.join("pdb").join(n),
        ]
    }
}

/// An image file (`ntoskrnl.exe`, `leakydrv.sys`) built with a
/// TimeDateStamp and SizeOfImage, as WinDbg fetches binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFileRequest {
    /// The image's file name (`ntoskrnl.exe`).
    pub name: PdbName,
    /// The COFF header's TimeDateStamp.
    pub time_date_stamp: u32,
    /// The optional header's SizeOfImage.
    pub size_of_image: u32,
}

impl ImageFileRequest {
    /// `<TimeDateStamp><SizeOfImage>` ([`image_key`]).
    pub fn key(&self) -> String {
        image_key(self.time_date_stamp, self.size_of_image)
    }
}

impl StoreFile for ImageFileRequest {
    fn file_name(&self) -> &PdbName {
        &self.name
    }
    fn store_key(&self) -> String {
        self.key()
    }
    fn alt_key(&self) -> Option<String> {
        Some(format!(
            "{:08x}{:x}",
            self.time_date_stamp, self.size_of_image
        ))
    }
    fn what(&self) -> &'static str {
        "image"
    }
    fn check(&self, p: &Path) -> Result<(), String> {
        let len = std::fs::metadata(p).map_err(|e| e.to_string())?.len();
        if len > MAX_DOWNLOAD {
            return Err(format!(
                "{len} bytes, more than the {MAX_DOWNLOAD}-byte limit"
            ));
        }
        let bytes = pooldump_io::input::read_capped(p, MAX_DOWNLOAD, "an image file")
            .map_err(|e| e.to_string())?;
        let h = goblin::pe::header::Header::parse(&bytes)
            .map_err(|e| format!("not a PE image ({e})"))?;
        let tds = h.coff_header.time_date_stamp;
        let size = h
            .optional_header
            .map(|o| o.windows_fields.size_of_image)
            .unwrap_or(0);
        if (tds, size) != (self.time_date_stamp, self.size_of_image) {
            return Err(format!(
                "wrong image: TimeDateStamp {tds:08x} SizeOfImage {size:#x}, wanted {:08x} {:#x}",
                self.time_date_stamp, self.size_of_image
            ));
        }
        Ok(())
    }
}

fn verify(p: &Path, req: &PdbRequest) -> Result<(), String> {
    match read_identity(p) {
        Ok((g, a)) if g == req.guid && a == req.age => Ok(()),
        Ok((g, a)) => Err(format!(
            "wrong PDB: GUID {g} age {a}, wanted GUID {} age {}",
            req.guid, req.age
        )),
        Err(PdbError::Malformed { detail, .. }) => Err(format!("not a valid PDB ({detail})")),
        Err(e) => Err(e.to_string()),
    }
}
