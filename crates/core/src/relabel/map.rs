//! The relabel map (`relabel.json`): the target and modules it was made
//! for, each patched site, what is wrong with one ([`RelabelError`]), and
//! what it says to write, to check and to undo.

use serde::{Deserialize, Serialize};

use crate::addr::KernelVa;
use crate::hittag::PoolCall;
use crate::kernel::{KernelIdentity, LoadedModule};
use crate::memory::Memory;
use crate::tag::PoolTag;

use super::hex::{hex_va, hex_va_opt, hex4};

/// The map schema this version writes and reads.
pub const SCHEMA: &str = "pooldump.relabel/1";

/// What a relabel changed, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelabelMap {
    /// [`SCHEMA`].
    pub schema: String,
    /// The tag whose sites were relabelled.
    pub tag: PoolTag,
    /// The kernel and boot the patches were written to; none for a patched
    /// driver file (`callsites --image --patch`), which any boot may load.
    pub target: Option<TargetIdentity>,
    /// The modules the sites are in, with the load address and PE identity each was patched at
    /// (checked before any write or undo).
    pub modules: Vec<MapModule>,
    /// The patched immediates, one per instruction (an immediate several calls share is one site;
    /// see [`MapSite::also`]).
    pub sites: Vec<MapSite>,
}

/// Which kernel, and which boot of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// nt's PDB name (`ntkrnlmp.pdb`).
    pub nt_pdb: String,
    /// nt's PDB GUID and age: the kernel build.
    pub nt_guid: String,
    /// nt's PDB age (the CodeView record's Age).
    pub nt_age: u32,
    /// Where nt is loaded: randomised at every boot since Windows 10 1607,
    /// so it tells boots apart.
    #[serde(with = "hex_va")]
    pub kern_base: KernelVa,
    /// The Windows build number, when known; recorded for the reader, not checked.
    pub build: Option<u32>,
}

impl TargetIdentity {
    /// The identity of a kernel pooldump found (None without a CodeView
    /// record: nothing to check a map against).
    pub fn of(kernel: &KernelIdentity, build: Option<u32>) -> Option<Self> {
        let cv = kernel.image.codeview.as_ref()?;
        Some(Self {
            nt_pdb: cv.pdb_name.clone(),
            nt_guid: cv.guid.to_string(),
            nt_age: cv.age,
            kern_base: kernel.kern_base,
            build,
        })
    }
}

/// A patched module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapModule {
    /// BaseDllName (`leakydrv.sys`).
    pub name: String,
    /// Where it was loaded; none for a patched file.
    #[serde(with = "hex_va_opt", default)]
    pub base: Option<KernelVa>,
    /// TimeDateStamp from the module's PE header: with `size_of_image`, tells a rebuilt driver from
    /// the one patched.
    pub time_date_stamp: u32,
    /// SizeOfImage from the module's PE header, in bytes.
    pub size_of_image: u32,
}

impl MapModule {
    /// A loaded module, with its TimeDateStamp and SizeOfImage from its
    /// headers in memory.
    pub fn read<M: Memory + ?Sized>(mem: &M, m: &LoadedModule) -> Result<Self, RelabelError> {
        let pe = crate::kernel::pe::read_pe_image(mem, m.base).map_err(|e| {
            RelabelError::ModuleUnreadable {
                module: m.name.clone(),
                error: e.to_string(),
            }
        })?;
        Ok(Self {
            name: m.name.clone(),
            base: Some(m.base),
            time_date_stamp: pe.time_date_stamp,
            size_of_image: pe.size_of_image,
        })
    }
}

/// One patched immediate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSite {
    /// Whether the site allocates or frees; only allocation sites get a fresh tag.
    pub kind: PoolCall,
    /// The module's BaseDllName.
    pub module: String,
    /// `module!function+0xoff` of the call's return address.
    pub site: String,
    /// The pool routine called (`ExAllocatePool2`, `ExFreePoolWithTag`, ...).
    pub routine: String,
    /// The call (or tail `jmp`) instruction's address when the map was made.
    #[serde(with = "hex_va")]
    pub call: KernelVa,
    /// The immediate's four bytes (at the module's base in `modules`).
    #[serde(with = "hex_va")]
    pub immediate: KernelVa,
    /// The immediate's offset from the module's base: where to patch the same driver loaded
    /// elsewhere.
    pub immediate_rva: u32,
    /// Where the bytes are in the driver file.
    pub file_offset: Option<u32>,
    /// The tag the site passed before the patch.
    pub old_tag: PoolTag,
    /// The allocation site's fresh tag; 0 for a free site.
    pub new_tag: PoolTag,
    /// The immediate's bytes before the patch (the tag as stored, little-endian).
    #[serde(with = "hex4")]
    pub old_bytes: [u8; 4],
    /// The bytes the patch writes (`new_tag`'s).
    #[serde(with = "hex4")]
    pub new_bytes: [u8; 4],
    /// Other calls the same immediate feeds (one patch changes them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

/// Bytes to write (or restore) at one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PatchWrite {
    /// Index into [`RelabelMap::sites`].
    pub site: usize,
    /// The immediate's address.
    pub va: KernelVa,
    /// What must be there before the write.
    pub expect: [u8; 4],
    /// The bytes to write.
    pub write: [u8; 4],
}

/// What a site holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum SiteState {
    /// Our new bytes.
    Relabelled,
    /// The original bytes (never patched, or undone).
    Original,
    /// Something else: someone else wrote there, or the module is not the
    /// one the map was made for.
    Foreign {
        /// The four bytes found.
        bytes: [u8; 4],
    },
    /// The immediate could not be read through the memory source.
    Unreadable {
        /// The reader's error.
        error: String,
    },
}

/// What undo will do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UndoPlan {
    /// Sites still holding our bytes: restore these.
    pub restore: Vec<PatchWrite>,
    /// Sites already holding the original bytes.
    pub already_original: Vec<usize>,
    /// Sites left alone, and why.
    pub refused: Vec<(usize, String)>,
}

/// Why a map cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum RelabelError {
    /// The map is not JSON, or not a relabel map's shape.
    #[error("{input}: not a pooldump relabel map (JSON {source})")]
    Json {
        /// The map's file name.
        input: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The map names a schema other than [`SCHEMA`].
    #[error(
        "{input}: schema `{found}` is not one this pooldump reads ({SCHEMA}); a newer pooldump wrote it, or it is not a relabel map"
    )]
    Schema {
        /// The map's file name.
        input: String,
        /// The schema the map names.
        found: String,
    },
    /// No pool call passes the tag as an immediate operand.
    #[error(
        "no instruction passes tag {tag} to a pool routine as an immediate: nothing to relabel"
    )]
    NoSites {
        /// The tag asked for.
        tag: PoolTag,
    },
    /// Only frees pass the tag.
    #[error("no allocation site of tag {tag}: relabelling only its frees would tell nothing")]
    NoAllocSites {
        /// The tag asked for.
        tag: PoolTag,
    },
    /// A site passes the tag with PROTECTED_POOL (bit 31) set.
    #[error(
        "{site} passes {tag} with the PROTECTED_POOL bit: Windows checks the tag of a protected block at every free, so a relabelled block freed with another tag breaks into the debugger; refusing"
    )]
    Protected {
        /// The site (`module!function+0xoff`).
        site: String,
        /// The tag as passed, protected bit included.
        tag: PoolTag,
    },
    /// Every candidate tag derived from the original is in use.
    #[error("no unused tag is left to give a site derived from {tag}")]
    NoFreeTag {
        /// The tag being relabelled.
        tag: PoolTag,
    },
    /// A site names a module the map's module list lacks.
    #[error("site {site} is in module {module}, which is not in the module list")]
    UnknownModule {
        /// The site (`module!function+0xoff`).
        site: String,
        /// The module it names.
        module: String,
    },
    /// The map was made for another nt build (PDB name, GUID or age differ).
    #[error(
        "the map was made for nt {map_pdb} {map_guid} age {map_age}, but this kernel is {found_pdb} {found_guid} age {found_age}"
    )]
    OtherKernel {
        /// The map's nt PDB name.
        map_pdb: String,
        /// The map's nt PDB GUID.
        map_guid: String,
        /// The map's nt PDB age.
        map_age: u32,
        /// This kernel's PDB name.
        found_pdb: String,
        /// This kernel's PDB GUID.
        found_guid: String,
        /// This kernel's PDB age.
        found_age: u32,
    },
    /// This kernel's image has no CodeView record to compare.
    #[error("this kernel has no PDB identity (no CodeView record) to check the map's against")]
    NoKernelIdentity,
    /// Same kernel, another boot: KernBase differs.
    #[error(
        "the map was made for the boot with KernBase {map}, but nt is at {found} here: another boot, whose code never carried the map's patches"
    )]
    OtherBoot {
        /// KernBase in the map.
        map: KernelVa,
        /// KernBase here.
        found: KernelVa,
    },
    /// A module the map patched is not loaded.
    #[error("{module} is not loaded here (the map patched it)")]
    ModuleMissing {
        /// Its BaseDllName.
        module: String,
    },
    /// A module the map patched is loaded at another base: another load.
    #[error(
        "{module} is loaded at {found}, but the map patched it at {map}: another load of it, whose code never carried the map's patches"
    )]
    ModuleMoved {
        /// Its BaseDllName.
        module: String,
        /// Its base in the map.
        map: KernelVa,
        /// Its base here.
        found: KernelVa,
    },
    /// A module the map patched has another TimeDateStamp or SizeOfImage:
    /// another build of the driver.
    #[error(
        "{module} here is TimeDateStamp {found_tds:#x} SizeOfImage {found_size:#x}, but the map patched TimeDateStamp {map_tds:#x} SizeOfImage {map_size:#x}: another build of the driver"
    )]
    ModuleChanged {
        /// Its BaseDllName.
        module: String,
        /// TimeDateStamp in the map.
        map_tds: u32,
        /// SizeOfImage in the map.
        map_size: u32,
        /// TimeDateStamp here.
        found_tds: u32,
        /// SizeOfImage here.
        found_size: u32,
    },
    /// A module's PE headers could not be read.
    #[error("{module}: cannot read its headers: {error}")]
    ModuleUnreadable {
        /// Its BaseDllName.
        module: String,
        /// The reader's error.
        error: String,
    },
}

impl RelabelMap {
    /// Parse a map file; `input` names it in errors.
    pub fn from_json(bytes: &[u8], input: &str) -> Result<Self, RelabelError> {
        #[derive(Deserialize)]
        struct Head {
            schema: String,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|source| RelabelError::Json {
            input: input.into(),
            source,
        })?;
        if head.schema != SCHEMA {
            return Err(RelabelError::Schema {
                input: input.into(),
                found: head.schema,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| RelabelError::Json {
            input: input.into(),
            source,
        })
    }

    /// The map as pretty JSON with a final newline (what `relabel.json`
    /// holds; [`from_json`](Self::from_json) reads it back).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a map serialises");
        s.push('\n');
        s
    }

    /// The allocation sites (those with a fresh tag).
    pub fn alloc_sites(&self) -> impl Iterator<Item = &MapSite> {
        self.sites.iter().filter(|s| s.kind == PoolCall::Alloc)
    }

    /// The site that gave out `tag` (compared without the protected bit).
    pub fn site_of(&self, tag: PoolTag) -> Option<&MapSite> {
        self.alloc_sites()
            .find(|s| s.new_tag.unprotected() == tag.unprotected())
    }

    /// Where site `i`'s immediate is in a module loaded at `base` (the
    /// map's own address when `base` is None).
    pub fn immediate_at(&self, i: usize, base: Option<KernelVa>) -> KernelVa {
        let s = &self.sites[i];
        match base {
            Some(b) => b.wrapping_add(u64::from(s.immediate_rva)),
            None => s.immediate,
        }
    }

    /// The writes that relabel (old bytes expected, new bytes written).
    pub fn writes(&self) -> Vec<PatchWrite> {
        self.sites
            .iter()
            .enumerate()
            .map(|(i, s)| PatchWrite {
                site: i,
                va: s.immediate,
                expect: s.old_bytes,
                write: s.new_bytes,
            })
            .collect()
    }

    /// What each site holds now, read through `mem` at the modules' bases
    /// in `loaded` (the map's own addresses for modules not listed).
    pub fn site_states<M: Memory + ?Sized>(
        &self,
        mem: &M,
        loaded: &[LoadedModule],
    ) -> Vec<SiteState> {
        (0..self.sites.len())
            .map(|i| {
                let s = &self.sites[i];
                let base = loaded
                    .iter()
                    .find(|m| m.name.eq_ignore_ascii_case(&s.module))
                    .map(|m| m.base);
                let va = self.immediate_at(i, base);
                let mut b = [0u8; 4];
                match mem.read_virtual(va, &mut b) {
                    Ok(()) if b == s.new_bytes => SiteState::Relabelled,
                    Ok(()) if b == s.old_bytes => SiteState::Original,
                    Ok(()) => SiteState::Foreign { bytes: b },
                    Err(e) => SiteState::Unreadable {
                        error: e.to_string(),
                    },
                }
            })
            .collect()
    }

    /// Undo: restore the original bytes only where ours are still there.
    pub fn undo_plan(&self, states: &[SiteState]) -> UndoPlan {
        let mut p = UndoPlan::default();
        for (i, (s, st)) in self.sites.iter().zip(states).enumerate() {
            match st {
                SiteState::Relabelled => p.restore.push(PatchWrite {
                    site: i,
                    va: s.immediate,
                    expect: s.new_bytes,
                    write: s.old_bytes,
                }),
                SiteState::Original => p.already_original.push(i),
                SiteState::Foreign { bytes } => p.refused.push((
                    i,
                    format!(
                        "{} at {} holds {}, neither the map's new bytes {} nor the original {}: someone else changed it; left alone",
                        s.site,
                        s.immediate,
                        hex4::text(bytes),
                        hex4::text(&s.new_bytes),
                        hex4::text(&s.old_bytes)
                    ),
                )),
                SiteState::Unreadable { error } => p.refused.push((
                    i,
                    format!("{} at {}: cannot read it ({error}); left alone", s.site, s.immediate),
                )),
            }
        }
        p
    }

    /// The map is for this kernel (same nt build) and this boot (same
    /// KernBase). A map of a patched file has no target and fits any.
    pub fn check_target(&self, kernel: &KernelIdentity) -> Result<(), RelabelError> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        let cv = kernel
            .image
            .codeview
            .as_ref()
            .ok_or(RelabelError::NoKernelIdentity)?;
        let guid = cv.guid.to_string();
        if !cv.pdb_name.eq_ignore_ascii_case(&t.nt_pdb) || guid != t.nt_guid || cv.age != t.nt_age {
            return Err(RelabelError::OtherKernel {
                map_pdb: t.nt_pdb.clone(),
                map_guid: t.nt_guid.clone(),
                map_age: t.nt_age,
                found_pdb: cv.pdb_name.clone(),
                found_guid: guid,
                found_age: cv.age,
            });
        }
        if kernel.kern_base != t.kern_base {
            return Err(RelabelError::OtherBoot {
                map: t.kern_base,
                found: kernel.kern_base,
            });
        }
        Ok(())
    }

    /// Every module the map patched is loaded here, at the same base (when
    /// the map has one), with the same TimeDateStamp and SizeOfImage.
    pub fn check_modules<M: Memory + ?Sized>(
        &self,
        mem: &M,
        loaded: &[LoadedModule],
    ) -> Result<(), RelabelError> {
        for mm in &self.modules {
            let l = loaded
                .iter()
                .find(|l| l.name.eq_ignore_ascii_case(&mm.name))
                .ok_or_else(|| RelabelError::ModuleMissing {
                    module: mm.name.clone(),
                })?;
            if let Some(b) = mm.base
                && b != l.base
            {
                return Err(RelabelError::ModuleMoved {
                    module: mm.name.clone(),
                    map: b,
                    found: l.base,
                });
            }
            let found = MapModule::read(mem, l)?;
            if (found.time_date_stamp, found.size_of_image)
                != (mm.time_date_stamp, mm.size_of_image)
            {
                return Err(RelabelError::ModuleChanged {
                    module: mm.name.clone(),
                    map_tds: mm.time_date_stamp,
                    map_size: mm.size_of_image,
                    found_tds: found.time_date_stamp,
                    found_size: found.size_of_image,
                });
            }
        }
        Ok(())
    }
}
