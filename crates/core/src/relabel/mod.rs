//! Relabelling: one fresh tag per allocation site of a leaking tag, so the
//! tracker counts each site apart (docs/relabel.md).
//!
//! A [`RelabelMap`] (`relabel.json`, schema [`SCHEMA`]) records what was
//! patched where: the target (nt's PDB identity and KernBase), each patched
//! module (name, base, TimeDateStamp, SizeOfImage), and per site its kind,
//! the old and new tag, the immediate's address and the bytes before and
//! after. [`plan`] computes it from the sites `callsites` found, with tags
//! from a [`TagChooser`]; [`RelabelMap::writes`] are the bytes to write,
//! [`RelabelMap::site_states`] and [`RelabelMap::undo_plan`] say which
//! sites still hold our bytes (undo restores only those), and
//! [`RelabelMap::check_target`] / [`RelabelMap::check_modules`] refuse a
//! map made for another kernel, boot or driver build.
//!
//! Free sites get the tag 0, which is what ExFreePool passes to
//! ExFreePoolWithTag: Windows compares a free's tag with the block's only
//! for PROTECTED_POOL tags (and then breaks into the debugger rather than
//! bug-checking), and segment-heap builds do not look at it at all, so 0
//! is safe on every build, whichever new tag the freed block carries.
//! Protected tags are refused for that reason. docs/relabel.md has the
//! evidence.
//!
//! The map is versioned like the snapshots: additions keep the version,
//! a change an older reader would misread bumps it.

mod chooser;
mod patch;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::addr::KernelVa;
use crate::callsites::TagSite;
use crate::hittag::PoolCall;
use crate::kernel::{KernelIdentity, LoadedModule};
use crate::memory::Memory;
use crate::pool::TagUsage;
use crate::tag::PoolTag;

pub use chooser::TagChooser;
pub use patch::{PatchError, PatchedImage, patch_image, pe_checksum};

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
    pub modules: Vec<MapModule>,
    pub sites: Vec<MapSite>,
}

/// Which kernel, and which boot of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// nt's PDB name (`ntkrnlmp.pdb`).
    pub nt_pdb: String,
    /// nt's PDB GUID and age: the kernel build.
    pub nt_guid: String,
    pub nt_age: u32,
    /// Where nt is loaded: randomised at every boot since Windows 10 1607,
    /// so it tells boots apart.
    #[serde(with = "hex_va")]
    pub kern_base: KernelVa,
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
    pub time_date_stamp: u32,
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
    pub kind: PoolCall,
    /// The module's BaseDllName.
    pub module: String,
    /// `module!function+0xoff` of the call's return address.
    pub site: String,
    pub routine: String,
    #[serde(with = "hex_va")]
    pub call: KernelVa,
    /// The immediate's four bytes (at the module's base in `modules`).
    #[serde(with = "hex_va")]
    pub immediate: KernelVa,
    pub immediate_rva: u32,
    /// Where the bytes are in the driver file.
    pub file_offset: Option<u32>,
    pub old_tag: PoolTag,
    /// The allocation site's fresh tag; 0 for a free site.
    pub new_tag: PoolTag,
    #[serde(with = "hex4")]
    pub old_bytes: [u8; 4],
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
    pub va: KernelVa,
    /// What must be there before the write.
    pub expect: [u8; 4],
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
        bytes: [u8; 4],
    },
    Unreadable {
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
    #[error("{input}: not a pooldump relabel map (JSON {source})")]
    Json {
        input: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{input}: schema `{found}` is not one this pooldump reads ({SCHEMA}); a newer pooldump wrote it, or it is not a relabel map"
    )]
    Schema { input: String, found: String },
    #[error(
        "no instruction passes tag {tag} to a pool routine as an immediate: nothing to relabel"
    )]
    NoSites { tag: PoolTag },
    #[error("no allocation site of tag {tag}: relabelling only its frees would tell nothing")]
    NoAllocSites { tag: PoolTag },
    #[error(
        "{site} passes {tag} with the PROTECTED_POOL bit: Windows checks the tag of a protected block at every free, so a relabelled block freed with another tag breaks into the debugger; refusing"
    )]
    Protected { site: String, tag: PoolTag },
    #[error("no unused tag is left to give a site derived from {tag}")]
    NoFreeTag { tag: PoolTag },
    #[error("site {site} is in module {module}, which is not in the module list")]
    UnknownModule { site: String, module: String },
    #[error(
        "the map was made for nt {map_pdb} {map_guid} age {map_age}, but this kernel is {found_pdb} {found_guid} age {found_age}"
    )]
    OtherKernel {
        map_pdb: String,
        map_guid: String,
        map_age: u32,
        found_pdb: String,
        found_guid: String,
        found_age: u32,
    },
    #[error("this kernel has no PDB identity (no CodeView record) to check the map's against")]
    NoKernelIdentity,
    #[error(
        "the map was made for the boot with KernBase {map}, but nt is at {found} here: another boot, whose code never carried the map's patches"
    )]
    OtherBoot { map: KernelVa, found: KernelVa },
    #[error("{module} is not loaded here (the map patched it)")]
    ModuleMissing { module: String },
    #[error(
        "{module} is loaded at {found}, but the map patched it at {map}: another load of it, whose code never carried the map's patches"
    )]
    ModuleMoved {
        module: String,
        map: KernelVa,
        found: KernelVa,
    },
    #[error(
        "{module} here is TimeDateStamp {found_tds:#x} SizeOfImage {found_size:#x}, but the map patched TimeDateStamp {map_tds:#x} SizeOfImage {map_size:#x}: another build of the driver"
    )]
    ModuleChanged {
        module: String,
        map_tds: u32,
        map_size: u32,
        found_tds: u32,
        found_size: u32,
    },
    #[error("{module}: cannot read its headers: {error}")]
    ModuleUnreadable { module: String, error: String },
}

/// Make the map for relabelling `tag`: each immediate of `sites` that
/// carries it (compared without the PROTECTED_POOL bit) gets a fresh tag
/// from `chooser` if it feeds an allocation, 0 if it only feeds frees.
/// `modules` identifies every module a site is in; `target` the kernel
/// (none for a driver file).
pub fn plan(
    tag: PoolTag,
    target: Option<TargetIdentity>,
    modules: &[MapModule],
    sites: &[TagSite],
    chooser: &mut TagChooser<'_>,
) -> Result<RelabelMap, RelabelError> {
    let mine: Vec<&TagSite> = sites
        .iter()
        .filter(|s| s.tag.unprotected() == tag.unprotected())
        .collect();
    if mine.is_empty() {
        return Err(RelabelError::NoSites { tag });
    }
    if !mine.iter().any(|s| s.kind == PoolCall::Alloc) {
        return Err(RelabelError::NoAllocSites { tag });
    }
    if let Some(s) = mine.iter().find(|s| s.tag.is_protected()) {
        return Err(RelabelError::Protected {
            site: s.site.clone(),
            tag: s.tag,
        });
    }
    // One patch per immediate, in module and address order.
    let mut by_imm: BTreeMap<(String, KernelVa), Vec<&TagSite>> = BTreeMap::new();
    for s in &mine {
        by_imm
            .entry((s.module.clone(), s.immediate))
            .or_default()
            .push(s);
    }
    let mut used_modules: Vec<MapModule> = Vec::new();
    let mut out = Vec::new();
    for ((module, _), calls) in by_imm {
        let first = calls[0];
        let Some(m) = modules
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(&module))
        else {
            return Err(RelabelError::UnknownModule {
                site: first.site.clone(),
                module,
            });
        };
        if !used_modules.iter().any(|u| u.name == m.name) {
            used_modules.push(m.clone());
        }
        let alloc = calls.iter().find(|c| c.kind == PoolCall::Alloc);
        let (kind, named) = match alloc {
            Some(a) => (PoolCall::Alloc, *a),
            None => (PoolCall::Free, first),
        };
        let new_tag = match kind {
            PoolCall::Alloc => chooser.choose(tag).ok_or(RelabelError::NoFreeTag { tag })?,
            PoolCall::Free => PoolTag(0),
        };
        out.push(MapSite {
            kind,
            module: named.module.clone(),
            site: named.site.clone(),
            routine: named.routine.clone(),
            call: named.call,
            immediate: named.immediate,
            immediate_rva: named.immediate_rva,
            file_offset: named.file_offset,
            old_tag: named.tag,
            new_tag,
            old_bytes: named.tag.bytes(),
            new_bytes: new_tag.bytes(),
            also: calls
                .iter()
                .filter(|c| c.call != named.call)
                .map(|c| format!("{} ({})", c.site, kind_word(c.kind)))
                .collect(),
        });
    }
    Ok(RelabelMap {
        schema: SCHEMA.into(),
        tag: tag.unprotected(),
        target,
        modules: used_modules,
        sites: out,
    })
}

/// What [`plan_on_target`] found and made.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    pub map: RelabelMap,
    /// Every site of the tag (the map's sites come from these).
    pub sites: Vec<TagSite>,
    /// Pool calls whose tag could not be followed: they may pass the tag
    /// too and stay unpatched.
    pub unresolved: Vec<crate::callsites::UnresolvedCall>,
    /// Modules skipped, pages unreadable, names from exports...
    pub notes: Vec<String>,
}

/// The whole "which bytes to write" step of a relabel, on a kernel
/// pooldump has opened (a live target stopped by the debugger, or a dump):
/// disassemble the drivers (all but nt, or those `only` names), find the
/// sites of `tag`, take fresh tags unused in the tracker (and in
/// `pooltag`), and record the kernel's and modules' identity. The caller
/// writes [`RelabelMap::writes`], reads them back, and saves the map.
pub fn plan_on_target<M: Memory>(
    target: &crate::target::Target<M>,
    tag: PoolTag,
    only: &[String],
    pooltag: Option<&crate::pool::PoolTagDb>,
    symbolizer: &mut crate::stack::Symbolizer<'_>,
    build: Option<u32>,
) -> Result<TargetPlan, RelabelPlanError> {
    use crate::callsites::{scan_module, tag_sites};
    let list = target
        .modules
        .as_ref()
        .ok_or(RelabelPlanError::NoModuleList)?;
    let wanted = |name: &str| {
        only.is_empty()
            || only.iter().any(|w| {
                name.eq_ignore_ascii_case(w)
                    || name
                        .rsplit_once('.')
                        .is_some_and(|(stem, _)| stem.eq_ignore_ascii_case(w))
            })
    };
    let mut walker = crate::stack::StackWalker::new(list);
    let mut scans = Vec::new();
    let mut notes = Vec::new();
    for (i, m) in list.modules.iter().enumerate().skip(1) {
        if !wanted(&m.name) {
            continue;
        }
        match scan_module(&mut walker, &target.mem, i) {
            Ok(s) => {
                notes.extend(s.notes.iter().cloned());
                scans.push(s);
            }
            Err(e) => notes.push(format!("{}: skipped: {e}", m.name)),
        }
    }
    let (sites, unresolved) = tag_sites(&scans, &[tag], &mut walker, symbolizer, &target.mem);
    notes.extend(symbolizer.notes().iter().cloned());
    let usage = target
        .pool_usage(&crate::pool::TrackerOptions {
            include_zero: true,
            ..Default::default()
        })
        .map_err(RelabelPlanError::Tracker)?;
    let mut chooser = TagChooser::new(usage.rows.iter().map(|r| r.tag), pooltag);
    let mut modules = Vec::new();
    for m in &list.modules {
        if sites.iter().any(|s| s.module == m.name) {
            modules.push(MapModule::read(&target.mem, m)?);
        }
    }
    let identity = TargetIdentity::of(&target.kernel, build);
    let map = plan(tag, identity, &modules, &sites, &mut chooser)?;
    Ok(TargetPlan {
        map,
        sites,
        unresolved,
        notes,
    })
}

/// Why [`plan_on_target`] could not make a map.
#[derive(Debug, thiserror::Error)]
pub enum RelabelPlanError {
    #[error("the loaded-module list could not be read: no driver to relabel")]
    NoModuleList,
    #[error("reading the tracker (to choose unused tags): {0}")]
    Tracker(#[source] crate::pool::PoolError),
    #[error(transparent)]
    Relabel(#[from] RelabelError),
}

fn kind_word(k: PoolCall) -> &'static str {
    match k {
        PoolCall::Alloc => "alloc",
        PoolCall::Free => "free",
    }
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
            Some(b) => KernelVa(b.0.wrapping_add(u64::from(s.immediate_rva))),
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

/// One row of `analyze --relabel`: a call site's own tag, as the tracker
/// counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteUsage {
    /// `module!function+0xoff`; for the old tag, what it still counts.
    pub site: String,
    /// Index into the map's sites; none for the old tag's row.
    pub map_site: Option<usize>,
    pub usage: TagUsage,
}

/// The tracker rows of the map's tags, one per site and pool, in the order
/// of `rows` (sort them first, as PoolMon does): each allocation site's
/// fresh tag, and the old tag (what was allocated before the relabel, or
/// by code the map did not patch). Sites whose tag the tracker has no row
/// for (nothing allocated since) are left out; see [`quiet_sites`].
pub fn site_usage(map: &RelabelMap, rows: &[TagUsage]) -> Vec<SiteUsage> {
    rows.iter()
        .filter_map(|r| {
            if r.tag.unprotected() == map.tag.unprotected() {
                return Some(SiteUsage {
                    site: format!(
                        "(old tag {}: before the relabel, or unpatched code)",
                        map.tag
                    ),
                    map_site: None,
                    usage: r.clone(),
                });
            }
            let i = map.sites.iter().position(|s| {
                s.kind == PoolCall::Alloc && s.new_tag.unprotected() == r.tag.unprotected()
            })?;
            Some(SiteUsage {
                site: map.sites[i].site.clone(),
                map_site: Some(i),
                usage: r.clone(),
            })
        })
        .collect()
}

/// Allocation sites with no tracker row: nothing allocated there since
/// the relabel.
pub fn quiet_sites<'a>(map: &'a RelabelMap, rows: &[TagUsage]) -> Vec<&'a MapSite> {
    map.alloc_sites()
        .filter(|s| {
            !rows
                .iter()
                .any(|r| r.tag.unprotected() == s.new_tag.unprotected())
        })
        .collect()
}

/// Addresses as `0xfffff80612341064` in the map, for people reading it.
mod hex_va {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::addr::KernelVa;

    pub fn serialize<S: Serializer>(v: &KernelVa, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", v.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KernelVa, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad address {s:?}")))
    }

    pub fn parse(s: &str) -> Option<KernelVa> {
        let h = s.strip_prefix("0x")?;
        u64::from_str_radix(&h.replace('`', ""), 16)
            .ok()
            .map(KernelVa)
    }
}

mod hex_va_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::addr::KernelVa;

    pub fn serialize<S: Serializer>(v: &Option<KernelVa>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(&format_args!("{:#x}", v.0)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KernelVa>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::hex_va::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("bad address {s:?}"))),
        }
    }
}

/// Four bytes as `4c65616b`.
mod hex4 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn text(b: &[u8; 4]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn serialize<S: Serializer>(b: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 4], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("bad bytes {s:?} (want 8 hex digits)"));
        if s.len() != 8 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 4];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
