//! Which driver owns a tag, without pooltag.txt: the `findstr /m /l <tag>
//! *.sys` method of the Microsoft docs, done on the driver images mapped in
//! the dump. A tag's bytes passed to ExAllocatePoolWithTag are usually an
//! immediate operand (`mov r8d, 'kaeL'`), so hits right after an opcode
//! that takes a 32-bit immediate count far more than stray bytes.
//!
//! Only the sections that can carry that evidence are searched: code and
//! read-only data ([`SectionLayout::evidence`]). Their bytes come from an
//! image file when an [`ImageFiles`] source has one whose headers match the
//! image in memory (a symbol store keeps binaries under
//! `<name>/<TimeDateStamp><SizeOfImage>/<name>`, as WinDbg fetches them),
//! else from memory; either way once per [`ImageCache`], which a
//! [`crate::Target`] keeps for its session. Over KDNET, where every 1 KiB
//! is a round trip, that is the difference between reading nt's whole
//! image page by page and reading a few sections once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use serde::Serialize;

use crate::addr::{KernelVa, PAGE_SIZE};
use crate::kernel::LoadedModule;
use crate::kernel::sections::{SectionLayout, file_section, read_section_layout};
use crate::memory::Memory;
use crate::tag::PoolTag;

/// The likely owner of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// BaseDllName of the module with the best evidence.
    pub module: String,
    /// Hits that are immediate operands of an instruction.
    pub immediate_hits: u32,
    /// Other occurrences of the four bytes in the searched sections.
    pub other_hits: u32,
    /// Other modules that also contain the tag, best first.
    pub also_in: Vec<String>,
}

/// Bytes searched per module at most.
pub const MAX_IMAGE: u64 = 64 << 20;

/// Image files from somewhere other than the target's memory: the seam
/// through which a symbol-store lookup (`<name>/<TimeDateStamp>
/// <SizeOfImage>/<name>`) feeds attribution. A closure
/// `Fn(&str, u32, u32) -> Option<Vec<u8>>` is one.
///
/// What it returns is checked against the headers in memory (the same
/// TimeDateStamp, SizeOfImage and section table) before a byte of it is
/// used; a file that differs is ignored with a note, and memory is read.
pub trait ImageFiles: Send + Sync {
    /// The whole file of the image `name` (BaseDllName, e.g.
    /// `ntoskrnl.exe`) built with `time_date_stamp` and `size_of_image`,
    /// if this source has it.
    fn image_file(&self, name: &str, time_date_stamp: u32, size_of_image: u32) -> Option<Vec<u8>>;
}

impl<F> ImageFiles for F
where
    F: Fn(&str, u32, u32) -> Option<Vec<u8>> + Send + Sync,
{
    fn image_file(&self, name: &str, time_date_stamp: u32, size_of_image: u32) -> Option<Vec<u8>> {
        self(name, time_date_stamp, size_of_image)
    }
}

/// Where a module's searched bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageOrigin {
    /// An image file whose headers match memory.
    File,
    /// The target's (or dump's) memory.
    Memory,
    /// Nothing usable: the headers could not be read.
    Unreadable,
}

/// One module's code and read-only data, as searched.
#[derive(Debug, Clone)]
pub struct ModuleText {
    /// BaseDllName.
    pub name: String,
    /// Where the module is loaded.
    pub base: KernelVa,
    /// Where its sections were read from.
    pub origin: ImageOrigin,
    /// `(section name, RVA, bytes)`.
    pub sections: Vec<(String, u32, Vec<u8>)>,
    /// Why a file was not used, or what could not be read.
    pub notes: Vec<String>,
}

/// Each module's searched sections, read once and kept for the session
/// (code and read-only data do not change while a target runs).
#[derive(Default)]
pub struct ImageCache {
    modules: Mutex<HashMap<(u64, u32), Arc<ModuleText>>>,
}

impl ImageCache {
    /// The cached sections of every module searched so far.
    pub fn modules(&self) -> Vec<Arc<ModuleText>> {
        let g = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = g.values().cloned().collect();
        v.sort_by_key(|m| m.base);
        v
    }

    /// `m`'s sections: from the cache, else from `files`, else from
    /// memory.
    pub fn module<M: Memory + ?Sized>(
        &self,
        mem: &M,
        m: &LoadedModule,
        files: Option<&dyn ImageFiles>,
    ) -> Arc<ModuleText> {
        let key = (m.base.0, m.size);
        if let Some(t) = self
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(t);
        }
        let t = Arc::new(load_module(mem, m, files));
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&t));
        t
    }
}

fn display_name(m: &LoadedModule) -> String {
    if m.name.is_empty() {
        format!("module at {}", m.base)
    } else {
        m.name.clone()
    }
}

fn load_module<M: Memory + ?Sized>(
    mem: &M,
    m: &LoadedModule,
    files: Option<&dyn ImageFiles>,
) -> ModuleText {
    let mut t = ModuleText {
        name: display_name(m),
        base: m.base,
        origin: ImageOrigin::Unreadable,
        sections: Vec::new(),
        notes: Vec::new(),
    };
    let layout = match read_section_layout(mem, m.base) {
        Ok(l) => l,
        Err(e) => {
            t.notes.push(e.to_string());
            return t;
        }
    };
    let mut budget = MAX_IMAGE;
    let wanted: Vec<_> = layout
        .evidence()
        .filter(|s| {
            let n = u64::from(s.mapped_size());
            let fits = n <= budget;
            budget = budget.saturating_sub(n);
            fits
        })
        .cloned()
        .collect();
    if let Some(files) = files
        && !m.name.is_empty()
        && let Some(file) = files.image_file(&m.name, layout.time_date_stamp, layout.size_of_image)
    {
        match SectionLayout::parse(&file) {
            Ok(fl) if layout.same_image(&fl) => {
                let from_file: Option<Vec<_>> = wanted
                    .iter()
                    .map(|s| file_section(&file, s).map(|b| (s.name.clone(), s.rva, b)))
                    .collect();
                match from_file {
                    Some(sections) => {
                        t.sections = sections;
                        t.origin = ImageOrigin::File;
                        return t;
                    }
                    None => t.notes.push(format!(
                        "the image file of {} is shorter than its section table says; reading memory",
                        t.name
                    )),
                }
            }
            Ok(_) => t.notes.push(format!(
                "the image file found for {} does not match the image in memory (TimeDateStamp, SizeOfImage or sections differ); reading memory",
                t.name
            )),
            Err(e) => t.notes.push(format!(
                "the image file found for {} is not a PE image ({e}); reading memory",
                t.name
            )),
        }
    }
    for s in &wanted {
        let bytes = read_mapped(mem, m.base, s.rva, s.mapped_size());
        t.sections.push((s.name.clone(), s.rva, bytes));
    }
    t.origin = ImageOrigin::Memory;
    t
}

/// Read `len` bytes at `base + rva` page by page; unreadable pages stay
/// zero (a paged-out page of a driver is no evidence either way).
fn read_mapped<M: Memory + ?Sized>(mem: &M, base: KernelVa, rva: u32, len: u32) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    let mut off = 0usize;
    while off < out.len() {
        let Some(va) = base.checked_add(u64::from(rva) + off as u64) else {
            break;
        };
        let n = ((PAGE_SIZE - va.page_offset()) as usize).min(out.len() - off);
        let _ = mem.read_virtual(va, &mut out[off..off + n]);
        off += n;
    }
    out
}

/// Search every module's code and read-only data for the tags, reading
/// each module from memory. Unreadable pages are skipped.
pub fn attribute_tags<M: Memory + ?Sized>(
    mem: &M,
    modules: &[LoadedModule],
    tags: &[PoolTag],
) -> BTreeMap<PoolTag, Attribution> {
    attribute_tags_with(mem, modules, tags, &ImageCache::default(), None)
}

/// [`attribute_tags`] with a session's cache and, optionally, image files
/// that save reading memory.
pub fn attribute_tags_with<M: Memory + ?Sized>(
    mem: &M,
    modules: &[LoadedModule],
    tags: &[PoolTag],
    cache: &ImageCache,
    files: Option<&dyn ImageFiles>,
) -> BTreeMap<PoolTag, Attribution> {
    let tags: Vec<PoolTag> = {
        let mut t: Vec<PoolTag> = tags
            .iter()
            .map(|t| t.unprotected())
            .filter(|t| t.0 != 0)
            .collect();
        t.sort();
        t.dedup();
        t
    };
    if tags.is_empty() {
        return BTreeMap::new();
    }
    let needles: Vec<[u8; 4]> = tags.iter().map(|t| t.bytes()).collect();
    let Ok(ac) = AhoCorasick::new(&needles) else {
        return BTreeMap::new();
    };
    // (tag index) -> per module (name, immediate, other)
    let mut evidence: Vec<Vec<(String, u32, u32)>> = vec![Vec::new(); tags.len()];
    for m in modules {
        if m.size == 0 || !m.base.is_kernel() {
            continue;
        }
        let text = cache.module(mem, m, files);
        let mut counts: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
        for (_, _, bytes) in &text.sections {
            for hit in ac.find_overlapping_iter(bytes) {
                let c = counts.entry(hit.pattern().as_usize()).or_default();
                if is_immediate(bytes, hit.start()) {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        for (i, (imm, other)) in counts {
            evidence[i].push((text.name.clone(), imm, other));
        }
    }
    let mut out = BTreeMap::new();
    for (i, mut ev) in evidence.into_iter().enumerate() {
        if ev.is_empty() {
            continue;
        }
        ev.sort_by_key(|(n, imm, other)| {
            (
                std::cmp::Reverse(*imm),
                std::cmp::Reverse(*other),
                n.clone(),
            )
        });
        let (module, immediate_hits, other_hits) = ev[0].clone();
        out.insert(
            tags[i],
            Attribution {
                module,
                immediate_hits,
                other_hits,
                also_in: ev[1..].iter().map(|e| e.0.clone()).collect(),
            },
        );
    }
    out
}

/// Is the 4-byte value at `at` the imm32 of a common instruction?
fn is_immediate(img: &[u8], at: usize) -> bool {
    let b = |back: usize| at.checked_sub(back).map(|i| img[i]);
    // mov r32, imm32 (B8+r), optionally with a REX prefix (41 B8 = mov r8d).
    if matches!(b(1), Some(0xB8..=0xBF)) {
        return true;
    }
    // push imm32
    if b(1) == Some(0x68) {
        return true;
    }
    // mov r/m32, imm32 (C7 /0) and the 81 /x group (cmp, and, or ...):
    // the opcode, a ModRM byte, maybe a SIB byte and a displacement, then
    // the immediate.
    (2..=7).any(|k| {
        let (Some(op), Some(modrm)) = (b(k), b(k - 1)) else {
            return false;
        };
        if op != 0xC7 && op != 0x81 {
            return false;
        }
        let (md, rm) = (modrm >> 6, modrm & 7);
        let sib = (md != 3 && rm == 4).then(|| b(k - 2)).flatten();
        let mut len = 1 + usize::from(sib.is_some());
        len += match md {
            1 => 1,
            2 => 4,
            0 if rm == 5 => 4,
            0 if sib.is_some_and(|s| s & 7 == 5) => 4,
            _ => 0,
        };
        1 + len == k
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Machine, put_pe_headers, put32};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const BASE: u64 = 0xFFFF_F806_1000_0000;
    const TDS: u32 = 0x5F00_1234;

    /// A driver: headers, `.text` at 0x1000 (code), `.data` at 0x2000
    /// (writable). Returns the mapped image and the file.
    fn driver(text: &[u8], data: &[u8], tds: u32) -> (Vec<u8>, Vec<u8>) {
        let mut h = vec![0u8; 0x400];
        let opt = put_pe_headers(&mut h, 2, tds, 0, 0x3000);
        let sec = opt + 0xF0;
        for (i, (name, rva, raw, len, ch)) in [
            (
                &b".text"[..],
                0x1000u32,
                0x400u32,
                text.len(),
                0x6000_0020u32,
            ),
            (&b".data"[..], 0x2000, 0x600, data.len(), 0xC000_0040),
        ]
        .into_iter()
        .enumerate()
        {
            let s = sec + 40 * i;
            h[s..s + name.len()].copy_from_slice(name);
            put32(&mut h, s + 8, len as u32);
            put32(&mut h, s + 12, rva);
            put32(&mut h, s + 16, 0x200);
            put32(&mut h, s + 20, raw);
            put32(&mut h, s + 36, ch);
        }
        let mut mapped = vec![0u8; 0x3000];
        mapped[..0x400].copy_from_slice(&h);
        mapped[0x1000..0x1000 + text.len()].copy_from_slice(text);
        mapped[0x2000..0x2000 + data.len()].copy_from_slice(data);
        let mut file = vec![0u8; 0x800];
        file[..0x400].copy_from_slice(&h);
        file[0x400..0x400 + text.len()].copy_from_slice(text);
        file[0x600..0x600 + data.len()].copy_from_slice(data);
        (mapped, file)
    }

    fn loaded(mapped: &[u8]) -> (Machine, LoadedModule) {
        let mut m = Machine::new();
        m.write_virt(BASE, mapped);
        let module = LoadedModule {
            entry: KernelVa(0),
            base: KernelVa(BASE),
            size: mapped.len() as u32,
            entry_point: KernelVa(BASE + 0x1000),
            name: "drv.sys".into(),
            full_name: None,
        };
        (m, module)
    }

    fn tag(s: &[u8; 4]) -> PoolTag {
        PoolTag(u32::from_le_bytes(*s))
    }

    /// `mov r8d, 'kaeL'` in code; 'Data' only in writable data.
    const CODE: [u8; 6] = [0x41, 0xB8, b'L', b'e', b'a', b'k'];

    #[test]
    fn only_code_and_read_only_data_are_evidence() {
        let (mapped, _) = driver(&CODE, b"Data", TDS);
        let (m, module) = loaded(&mapped);
        let found = attribute_tags(&m, &[module], &[tag(b"Leak"), tag(b"Data")]);
        let a = &found[&tag(b"Leak")];
        assert_eq!((a.module.as_str(), a.immediate_hits), ("drv.sys", 1));
        assert!(!found.contains_key(&tag(b"Data")), "{found:?}");
    }

    #[test]
    fn a_matching_image_file_replaces_memory_once_per_cache() {
        let (mapped, _) = driver(&CODE, b"", TDS);
        // The file's code names another tag: what is found proves where
        // the bytes came from.
        let (_, file) = driver(&[0x41, 0xB8, b'F', b'i', b'l', b'e'], b"", TDS);
        let (m, module) = loaded(&mapped);
        let calls = AtomicUsize::new(0);
        let files = |name: &str, tds: u32, size: u32| {
            calls.fetch_add(1, Ordering::Relaxed);
            (name == "drv.sys" && tds == TDS && size == 0x3000).then(|| file.clone())
        };
        let cache = ImageCache::default();
        let tags = [tag(b"Leak"), tag(b"File")];
        for _ in 0..2 {
            let found = attribute_tags_with(
                &m,
                std::slice::from_ref(&module),
                &tags,
                &cache,
                Some(&files),
            );
            assert!(found.contains_key(&tag(b"File")) && !found.contains_key(&tag(b"Leak")));
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1, "read once per cache");
        assert_eq!(cache.modules()[0].origin, ImageOrigin::File);
    }

    #[test]
    fn an_image_file_that_does_not_match_memory_is_not_used() {
        let (mapped, _) = driver(&CODE, b"", TDS);
        let (_, other_build) = driver(&[0x41, 0xB8, b'F', b'i', b'l', b'e'], b"", TDS + 1);
        let (m, module) = loaded(&mapped);
        let files = |_: &str, _: u32, _: u32| Some(other_build.clone());
        let cache = ImageCache::default();
        let found = attribute_tags_with(
            &m,
            &[module],
            &[tag(b"Leak"), tag(b"File")],
            &cache,
            Some(&files),
        );
        assert!(found.contains_key(&tag(b"Leak")) && !found.contains_key(&tag(b"File")));
        let t = &cache.modules()[0];
        assert_eq!(t.origin, ImageOrigin::Memory);
        assert!(t.notes[0].contains("does not match"), "{:?}", t.notes);
    }

    #[test]
    fn recognises_immediate_operands() {
        // mov r8d, 'kaeL'
        let code = [0x41, 0xB8, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 2));
        // mov dword ptr [rsp+20h], imm32
        let code = [0xC7, 0x44, 0x24, 0x20, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 4));
        // mov dword ptr [rip+disp32], imm32
        let code = [0xC7, 0x05, 1, 2, 3, 4, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 6));
        // cmp ecx, imm32
        let code = [0x81, 0xF9, b'L', b'e', b'a', b'k'];
        assert!(is_immediate(&code, 2));
        // a string in data
        let data = [b'x', b'y', b'L', b'e', b'a', b'k'];
        assert!(!is_immediate(&data, 2));
    }
}
