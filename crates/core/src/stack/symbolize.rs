//! Addresses as WinDbg names them: `module!function+0xoff`.
//!
//! Per module, once: the PDB its CodeView (RSDS) record names, found along
//! the symbol path with the same store code as nt's (local directories,
//! stores, `srv*` servers, `cache*`); its procedures (S_GPROC32/S_LPROC32,
//! with their lengths) and publics (S_PUB32). Without a PDB, the image's
//! export table. Without either, `module+0xoff`. A missing PDB is a note,
//! never an error.
//!
//! The export table is parsed here rather than with goblin: goblin's
//! parser wants the whole file with its section table, and this reads a
//! mapped image a page at a time (over a network, for a live target).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use pdb2::FallibleIterator;
use serde::Serialize;

use super::StackWalker;
use super::image::{ModuleImage, ReadStats};
use crate::addr::KernelVa;
use crate::bytes::Le;
use crate::kernel::pe::{PeError, parse_pe_image};
use crate::memory::Memory;
use crate::symbols::store::{FetchOptions, PdbRequest, find_pdb};
use crate::symbols::{PdbName, SymbolPath};

/// Functions kept per module at most (ntkrnlmp.pdb has about 60,000
/// publics and procedures): a hostile PDB cannot fill memory.
pub const MAX_FUNCTIONS: usize = 1 << 20;
/// Exports read at most per module.
pub const MAX_EXPORTS: u32 = 1 << 16;
/// A name longer than this is cut (with `…`).
pub const MAX_NAME: usize = 512;

/// Where a module's names come from.
pub struct SymbolizerOptions<'a> {
    /// The symbol path PDBs are looked for on (`_NT_SYMBOL_PATH`'s syntax); empty: exports only.
    pub symbol_path: SymbolPath,
    /// How symbol servers are asked (offline, cache, timeouts).
    pub fetch: FetchOptions<'a>,
    /// PDB files given explicitly (`--pdb`): used for a module whose RSDS
    /// record they match, before the symbol path.
    pub pdb_files: Vec<PathBuf>,
}

impl Default for SymbolizerOptions<'_> {
    /// No symbol path: exports only.
    fn default() -> Self {
        Self {
            symbol_path: SymbolPath {
                elements: Vec::new(),
            },
            fetch: FetchOptions {
                offline: true,
                ..FetchOptions::default()
            },
            pdb_files: Vec::new(),
        }
    }
}

/// Where a name came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SymbolOrigin {
    /// A procedure or public symbol of the module's PDB.
    Pdb,
    /// The image's export table.
    Export,
    /// No name: an offset from the module's base.
    ModuleOffset,
    /// In no module.
    Address,
}

/// A symbolized address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbol {
    /// The address named.
    pub address: KernelVa,
    /// The module's short name (`nt`).
    pub module: Option<String>,
    /// The function's name (PDB procedure or public, or export), None when only the module is
    /// known.
    pub function: Option<String>,
    /// From the function's start, else from the module's base.
    pub offset: u64,
    /// Where the name came from.
    pub origin: SymbolOrigin,
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.module, &self.function) {
            (Some(m), Some(func)) if self.offset == 0 => write!(f, "{m}!{func}"),
            (Some(m), Some(func)) => write!(f, "{m}!{func}+{:#x}", self.offset),
            (Some(m), None) => write!(f, "{m}+{:#x}", self.offset),
            _ => write!(f, "0x{}", self.address),
        }
    }
}

/// A module's function starts, sorted.
#[derive(Debug, Default)]
struct Names {
    /// (rva, length, name) of procedures.
    procs: Vec<(u32, u32, String)>,
    /// (rva, name) of publics or exports.
    starts: Vec<(u32, String)>,
    origin: Option<SymbolOrigin>,
}

impl Names {
    /// A procedure (with its length) contains `rva`.
    fn procs_contain(&self, rva: u32) -> bool {
        let i = self.procs.partition_point(|p| p.0 <= rva);
        self.procs[..i]
            .iter()
            .rev()
            .take(16)
            .any(|p| rva - p.0 < p.1.max(1))
    }

    fn lookup(&self, rva: u32) -> Option<(&str, u32)> {
        // A procedure that contains the address wins (it has a length).
        let i = self.procs.partition_point(|p| p.0 <= rva);
        if let Some(p) = self.procs[..i]
            .iter()
            .rev()
            .take(16)
            .find(|p| rva - p.0 < p.1.max(1))
        {
            return Some((&p.2, rva - p.0));
        }
        let i = self.starts.partition_point(|p| p.0 <= rva);
        if i > 0 {
            let p = &self.starts[i - 1];
            return Some((&p.1, rva - p.0));
        }
        let i = self.procs.partition_point(|p| p.0 <= rva);
        (i > 0).then(|| {
            let p = &self.procs[i - 1];
            (p.2.as_str(), rva - p.0)
        })
    }
}

/// Names addresses, loading each module's names once.
pub struct Symbolizer<'a> {
    opts: SymbolizerOptions<'a>,
    /// By (module base, name): the walker's modules.
    names: HashMap<(KernelVa, String), Names>,
    notes: Vec<String>,
}

impl<'a> Symbolizer<'a> {
    /// A symbolizer that loads nothing until asked.
    pub fn new(opts: SymbolizerOptions<'a>) -> Self {
        Self {
            opts,
            names: HashMap::new(),
            notes: Vec::new(),
        }
    }

    /// What happened while loading names: a PDB not found (and where it
    /// was looked for), exports used instead, unreadable headers.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Name `va` with the modules (and image caches) of `walker`.
    pub fn symbolize<M: Memory + ?Sized>(
        &mut self,
        walker: &mut StackWalker,
        mem: &M,
        va: KernelVa,
    ) -> Symbol {
        let Some(i) = walker.module_at(va) else {
            return Symbol {
                address: va,
                module: None,
                function: None,
                offset: 0,
                origin: SymbolOrigin::Address,
            };
        };
        let m = walker.modules()[i].clone();
        let rva = (va.0 - m.base.0) as u32;
        let key = (m.base, m.name.clone());
        if !self.names.contains_key(&key) {
            let names = self.load(walker, mem, i);
            self.names.insert(key.clone(), names);
        }
        // Code split from its function (a cold fragment with chained
        // unwind info) is named after the function its chain leads to, as
        // the PDB's separated-code records would name it, rather than after
        // whatever public precedes it.
        let mut stats = ReadStats::default();
        let (rva_for_name, extra) = {
            let names = &self.names[&key];
            let contained = names.procs_contain(rva);
            match (!contained)
                .then(|| walker.chain_root(mem, i, rva, &mut stats))
                .flatten()
            {
                Some(root) if names.lookup(root).is_some_and(|(_, off)| off == 0) => {
                    (root, rva - root)
                }
                _ => (rva, 0),
            }
        };
        let names = &self.names[&key];
        match names.lookup(rva_for_name).map(|(f, off)| (f, off + extra)) {
            Some((func, off)) => Symbol {
                address: va,
                module: Some(m.short_name),
                function: Some(func.to_string()),
                offset: u64::from(off),
                origin: names.origin.clone().unwrap_or(SymbolOrigin::Export),
            },
            None => Symbol {
                address: va,
                module: Some(m.short_name),
                function: None,
                offset: u64::from(rva),
                origin: SymbolOrigin::ModuleOffset,
            },
        }
    }

    fn load<M: Memory + ?Sized>(&mut self, walker: &mut StackWalker, mem: &M, i: usize) -> Names {
        let module = walker.modules()[i].clone();
        let mut stats = ReadStats::default();
        let img = match walker.image(mem, i, &mut stats) {
            Ok(img) => img,
            Err(e) => {
                self.notes
                    .push(format!("{}: no names: {e}", module.short_name));
                return Names::default();
            }
        };
        match self.pdb_names(img, mem, &mut stats) {
            Ok(n) => return n,
            Err(why) => self.notes.push(format!("{}: {why}", module.short_name)),
        }
        match exports(img, mem, &mut stats) {
            Ok(n) if !n.starts.is_empty() => {
                self.notes.push(format!(
                    "{}: names from the image's export table ({} exports)",
                    module.short_name,
                    n.starts.len()
                ));
                n
            }
            Ok(_) => {
                self.notes.push(format!(
                    "{}: no exports either; addresses are shown as {}+0xoffset",
                    module.short_name, module.short_name
                ));
                Names::default()
            }
            Err(e) => {
                self.notes
                    .push(format!("{}: the export table: {e}", module.short_name));
                Names::default()
            }
        }
    }

    fn pdb_names<M: Memory + ?Sized>(
        &self,
        img: &mut ModuleImage,
        mem: &M,
        stats: &mut ReadStats,
    ) -> Result<Names, String> {
        let base = img.base();
        let pe = parse_pe_image(base, |what, rva, len| {
            let rva = u32::try_from(rva).map_err(|_| PeError::Malformed {
                va: base,
                detail: format!("{what} RVA {rva:#x} is past 4 GiB"),
            })?;
            img.read(mem, rva, len, stats)
                .map_err(|e| PeError::Malformed {
                    va: base,
                    detail: e.to_string(),
                })
        })
        .map_err(|e| format!("no PDB identity: {e}"))?;
        let cv = pe.codeview.ok_or_else(|| {
            format!(
                "no PDB identity ({})",
                pe.warnings.first().map_or("no RSDS record", |w| w.as_str())
            )
        })?;
        let name = PdbName::from_codeview(&cv.pdb_name).map_err(|e| e.to_string())?;
        let req = PdbRequest {
            name: name.clone(),
            guid: cv.guid,
            age: cv.age,
        };
        for p in &self.opts.pdb_files {
            if matches!(crate::symbols::pdb::read_identity(p), Ok((g, a)) if g == cv.guid && a == cv.age)
            {
                return read_functions(p).map_err(|e| format!("{}: {e}", p.display()));
            }
        }
        let found = find_pdb(&self.opts.symbol_path, &req, &self.opts.fetch).map_err(|e| {
            format!(
                "no PDB {} {} on the symbol path ({e}); using the export table",
                name,
                req.key()
            )
        })?;
        read_functions(&found.path).map_err(|e| format!("{}: {e}", found.path.display()))
    }
}

/// Procedures and publics of the PDB at `path`, as module RVAs.
fn read_functions(path: &Path) -> Result<Names, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    read_functions_from(file)
}

/// How many functions (procedures and public functions) a driver's PDB
/// names, read as the symbolizer reads a PDB file; an error says why it
/// cannot be used. The fuzz targets use this.
pub fn count_pdb_functions(bytes: &[u8]) -> Result<usize, String> {
    read_functions_from(std::io::Cursor::new(bytes)).map(|n| n.procs.len() + n.starts.len())
}

fn read_functions_from<'s, R>(source: R) -> Result<Names, String>
where
    R: std::io::Read + std::io::Seek + std::fmt::Debug + Send + Sync + 's,
{
    let mut pdb = pdb2::PDB::open(source).map_err(|e| e.to_string())?;
    crate::symbols::pdb::check_dbi(&mut pdb)?;
    let map = pdb.address_map().map_err(|e| e.to_string())?;
    let mut names = Names {
        origin: Some(SymbolOrigin::Pdb),
        ..Names::default()
    };
    let full = |n: &Names| n.procs.len() + n.starts.len() >= MAX_FUNCTIONS;
    let globals = pdb.global_symbols().map_err(|e| e.to_string())?;
    let mut it = globals.iter();
    while let Some(sym) = it.next().map_err(|e| e.to_string())? {
        if full(&names) {
            break;
        }
        if !crate::symbols::pdb::symbol_kind_is_read(sym.raw_kind()) {
            continue;
        }
        if let Ok(pdb2::SymbolData::Public(p)) = sym.parse()
            && p.function
            && let Some(rva) = p.offset.to_rva(&map)
        {
            names.starts.push((rva.0, clean(&p.name.to_string())));
        }
    }
    let dbi = pdb.debug_information().map_err(|e| e.to_string())?;
    let mut modules = dbi.modules().map_err(|e| e.to_string())?;
    while let Some(m) = modules.next().map_err(|e| e.to_string())? {
        let Ok(Some(info)) = pdb.module_info(&m) else {
            continue;
        };
        let Ok(mut syms) = info.symbols() else {
            continue;
        };
        // A module stream that stops parsing keeps what it gave.
        while let Ok(Some(sym)) = syms.next() {
            if full(&names) {
                break;
            }
            if !crate::symbols::pdb::symbol_kind_is_read(sym.raw_kind()) {
                continue;
            }
            if let Ok(pdb2::SymbolData::Procedure(p)) = sym.parse()
                && let Some(rva) = p.offset.to_rva(&map)
            {
                names.procs.push((rva.0, p.len, clean(&p.name.to_string())));
            }
        }
    }
    names
        .procs
        .sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    names.procs.dedup_by(|a, b| a.0 == b.0);
    names.starts.sort();
    names.starts.dedup_by(|a, b| a.0 == b.0);
    if names.procs.is_empty() && names.starts.is_empty() {
        return Err("the PDB has no procedures or public functions".into());
    }
    Ok(names)
}

/// A name for a terminal: escaped by the one rule (crate::text), length
/// capped.
fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= MAX_NAME {
            out.push('…');
            break;
        }
        out.push_str(&crate::text::escape(c.encode_utf8(&mut [0u8; 4])));
    }
    out
}

/// The export table of the image: names of exported functions (forwarders
/// skipped), from IMAGE_EXPORT_DIRECTORY.
fn exports<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    stats: &mut ReadStats,
) -> Result<Names, String> {
    let mut names = Names {
        origin: Some(SymbolOrigin::Export),
        ..Names::default()
    };
    let Some((dir, dir_size)) = img.headers.export else {
        return Ok(names);
    };
    let d = img.read(mem, dir, 40, stats).map_err(|e| e.to_string())?;
    let d = Le(&d);
    let n_funcs = d.u32(0x14).unwrap_or(0);
    let n_names = d.u32(0x18).unwrap_or(0).min(MAX_EXPORTS);
    let funcs = d.u32(0x1C).unwrap_or(0);
    let name_ptrs = d.u32(0x20).unwrap_or(0);
    let ordinals = d.u32(0x24).unwrap_or(0);
    if n_names == 0 {
        return Ok(names);
    }
    let ptrs = img
        .read(mem, name_ptrs, n_names * 4, stats)
        .map_err(|e| format!("the name table: {e}"))?;
    let ords = img
        .read(mem, ordinals, n_names * 2, stats)
        .map_err(|e| format!("the ordinal table: {e}"))?;
    let forwarder = |rva: u32| rva >= dir && u64::from(rva) < u64::from(dir) + u64::from(dir_size);
    for k in 0..n_names as usize {
        let (Some(name_rva), Some(ord)) = (Le(&ptrs).u32(4 * k), Le(&ords).u16(2 * k)) else {
            break;
        };
        if u32::from(ord) >= n_funcs {
            continue;
        }
        let Ok(f) = img.read(mem, funcs.saturating_add(4 * u32::from(ord)), 4, stats) else {
            continue;
        };
        let rva = Le(&f).u32(0).unwrap_or(0);
        if rva == 0 || forwarder(rva) {
            continue;
        }
        if let Some(name) = read_cstr(img, mem, name_rva, stats) {
            names.starts.push((rva, name));
        }
    }
    names.starts.sort();
    names.starts.dedup_by(|a, b| a.0 == b.0);
    Ok(names)
}

/// A NUL-terminated ASCII name at `rva`, at most [`MAX_NAME`] bytes.
fn read_cstr<M: Memory + ?Sized>(
    img: &mut ModuleImage,
    mem: &M,
    rva: u32,
    stats: &mut ReadStats,
) -> Option<String> {
    // Read up to the end of the page first (names are short), then more.
    let mut out = Vec::new();
    let mut cur = rva;
    while out.len() < MAX_NAME {
        let n = (0x1000 - (cur % 0x1000)).min((MAX_NAME - out.len()) as u32);
        let b = img.read(mem, cur, n, stats).ok()?;
        match b.iter().position(|&c| c == 0) {
            Some(p) => {
                out.extend_from_slice(&b[..p]);
                return (!out.is_empty()).then(|| crate::bytes::escape_ascii(&out));
            }
            None => out.extend_from_slice(&b),
        }
        cur = cur.checked_add(n)?;
    }
    Some(format!("{}…", crate::bytes::escape_ascii(&out)))
}
