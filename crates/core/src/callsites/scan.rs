//! One module's scan: its code read page by page, cut into regions, each
//! region through the data-flow, and every call to a tagged pool routine
//! with the tags that reach it.

use super::*;

/// Disassemble module `m` of `walker` and list its calls to tagged pool
/// routines. Errors only when the module's headers cannot be read; what
/// could not be read inside is counted and noted.
pub fn scan_module<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
) -> Result<ModuleScan, crate::stack::ImageError> {
    let mut budget = MAX_CODE_BYTES;
    scan_module_within(walker, mem, m, &mut budget)
}

/// [`scan_module`] reading at most `budget` bytes of code (and never more
/// than [`MAX_CODE_BYTES`]), taking what it reads from `budget`. The scans
/// of all a target's modules share one budget ([`MAX_TOTAL_CODE_BYTES`]),
/// so a hostile module list cannot multiply the per-module bound.
pub fn scan_module_within<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    budget: &mut u64,
) -> Result<ModuleScan, crate::stack::ImageError> {
    let mut stats = ReadStats::default();
    let module: StackModule = walker.modules()[m].clone();
    let (tds, soi) = walker.image_identity(mem, m, &mut stats)?;
    // Every address below is base + an RVA under SizeOfImage: refuse an
    // image that would wrap past the top of the address space.
    if module.base.0.checked_add(u64::from(soi)).is_none() {
        return Err(crate::stack::ImageError::PastAddressSpace {
            image: module.name.clone(),
            base: module.base.0,
            size_of_image: soi,
        });
    }
    let sections = walker.sections(mem, m, &mut stats)?;
    let mut scan = ModuleScan {
        module: module.name.clone(),
        base: module.base,
        time_date_stamp: Some(tds),
        size_of_image: Some(soi),
        sections: sections.clone(),
        calls: Vec::new(),
        code_bytes: 0,
        unreadable_pages: 0,
        notes: Vec::new(),
        kmdf_globals: None,
        driver_pool_tag: None,
    };
    let imports = import_slots(walker, mem, m, &mut stats).unwrap_or_default();
    if imports.is_empty() {
        scan.notes.push(format!(
            "{}: no imports by name could be read; no pool call can be recognised",
            module.name
        ));
    }
    let kmdf = kmdf::kmdf_table(walker, mem, m, &sections, &imports, budget, &mut stats);
    let code = read_code(mem, &module, &sections, soi, &mut scan, budget);
    let cuts = region_cuts(walker, mem, m, &code, &mut scan, &mut stats);
    let thunk = |t: u64| -> Option<u64> {
        let r = code.iter().find(|r| r.contains(t))?;
        let at = (t - r.va) as usize;
        thunk_slot(t, &r.bytes[at..r.bytes.len().min(at + 16)])
    };
    let calls = Calls {
        imports: &imports,
        thunk: &thunk,
        kmdf: kmdf.as_ref(),
    };
    // 3. Each region through the data-flow.
    let mut globals = BTreeSet::new();
    for r in &code {
        let end = r.va + r.bytes.len() as u64;
        let mut starts: Vec<u64> = std::iter::once(r.va)
            .chain(cuts.range(r.va + 1..end).copied())
            .collect();
        starts.dedup();
        for (k, &lo) in starts.iter().enumerate() {
            let hi = starts.get(k + 1).copied().unwrap_or(end);
            let bytes = &r.bytes[(lo - r.va) as usize..(hi - r.va) as usize];
            scan_piece(
                lo,
                bytes,
                &module.name,
                &calls,
                &mut scan.calls,
                &mut globals,
            );
        }
    }
    scan.calls.sort_by_key(|c| c.call);
    scan.calls.dedup_by_key(|c| c.call);
    // 4. A KMDF driver's own tag, from the globals its stub bound.
    if kmdf.is_some()
        && let [va] = globals.into_iter().collect::<Vec<_>>()[..]
        && va
            .checked_sub(module.base.0)
            .is_some_and(|r| r < u64::from(soi))
    {
        scan.kmdf_globals = Some(KernelVa(va));
        scan.driver_pool_tag = kmdf::driver_pool_tag(mem, va);
    }
    Ok(scan)
}

/// What a call may go through to reach a pool routine.
struct Calls<'a> {
    /// Import slots by address, and their routines' names.
    imports: &'a HashMap<u64, String>,
    /// The import slot a linker thunk at an address jumps through.
    thunk: &'a dyn Fn(u64) -> Option<u64>,
    /// A KMDF driver's function table.
    kmdf: Option<&'a kmdf::KmdfTable>,
}

impl Calls<'_> {
    /// What a call to the import `WdfVersionBind` passes last (R9), when
    /// that is a global's address: KMDF's stub passes
    /// `&WdfDriverGlobals`, which the framework fills.
    fn bind_globals(
        &self,
        ins: &iced_x86::Instruction,
        cp: &flow::CallPoint,
        tail: bool,
    ) -> Option<u64> {
        self.kmdf?;
        let (slot, _) = call_slot(ins, cp, tail, self.thunk)?;
        if self.imports.get(&slot)? != "WdfVersionBind" {
            return None;
        }
        match &cp.state[flow::gpr(Register::R9)?] {
            flow::Val::Set(v) => match v.as_slice() {
                [flow::Src::Addr { va }] => Some(*va),
                _ => None,
            },
            flow::Val::Unknown => None,
        }
    }

    /// The pool routine a call or jump reaches, how, and where its tag is.
    fn routine(
        &self,
        ins: &iced_x86::Instruction,
        cp: &flow::CallPoint,
        tail: bool,
    ) -> Option<(String, CallVia, PoolCall, TagArg)> {
        if let Some(index) = self.kmdf.and_then(|k| kmdf::kmdf_call(ins, cp, k)) {
            let (name, kind, arg) = kmdf::kmdf_routine(index)?;
            return Some((name.to_string(), CallVia::Wdf { index }, kind, arg));
        }
        let (slot, via) = call_slot(ins, cp, tail, self.thunk)?;
        let name = self.imports.get(&slot)?;
        let (kind, arg) = tagged_routine(name)?;
        Some((name.clone(), via, kind, arg))
    }
}

/// Step 3 for one piece of code (from `lo`, between region cuts): the
/// tagged pool calls the data-flow finds in it, through `calls`.
fn scan_piece(
    lo: u64,
    bytes: &[u8],
    module: &str,
    calls: &Calls<'_>,
    out: &mut Vec<PoolCallSite>,
    globals: &mut BTreeSet<u64>,
) {
    let insns = flow::decode_linear(lo, bytes);
    for cp in flow::analyze(&insns) {
        let ins = &insns[cp.index].ins;
        let tail = !matches!(
            ins.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        );
        globals.extend(calls.bind_globals(ins, &cp, tail));
        let Some((routine, via, kind, arg)) = calls.routine(ins, &cp, tail) else {
            continue;
        };
        out.push(PoolCallSite {
            module: module.to_string(),
            call: KernelVa(ins.ip()),
            return_address: KernelVa(ins.next_ip()),
            tail_call: tail,
            routine,
            kind,
            via,
            tag_register: arg.to_string(),
            tags: tag_values(&cp, arg),
        });
    }
}

/// Step 1: the module's code sections, page by page, as contiguous ranges
/// (pages of zeros left out); what cannot be read is counted in `scan`.
fn read_code<M: Memory + ?Sized>(
    mem: &M,
    module: &StackModule,
    sections: &[SectionHeader],
    soi: u32,
    scan: &mut ModuleScan,
    budget: &mut u64,
) -> Vec<CodeRange> {
    let base = module.base.0;
    let mut code: Vec<CodeRange> = Vec::new();
    let cap = MAX_CODE_BYTES.min(*budget);
    let mut left = cap;
    for s in sections.iter().filter(|s| s.is_code()) {
        let len = u64::from(s.mapped_size())
            .min(u64::from(soi).saturating_sub(u64::from(s.rva)))
            .min(left);
        if len < u64::from(s.mapped_size()) {
            scan.notes.push(format!(
                "{}: section {} is cut to {len:#x} bytes (SizeOfImage, or the code a scan reads: {MAX_CODE_BYTES:#x} bytes a module, {MAX_TOTAL_CODE_BYTES:#x} in all)",
                module.name, s.name
            ));
        }
        left -= len;
        let mut off = 0u64;
        while off < len {
            let va = base + u64::from(s.rva) + off;
            let n = (PAGE_SIZE - (va % PAGE_SIZE)).min(len - off);
            let mut buf = vec![0u8; n as usize];
            match mem.read_virtual(KernelVa(va), &mut buf) {
                // A page of zeros holds no call: the loader's fill past a
                // section's raw data, which a hostile VirtualSize makes
                // 64 MiB of a file of a few bytes. Not decoded.
                Ok(()) if buf.iter().all(|&b| b == 0) => {}
                Ok(()) => match code.last_mut() {
                    Some(r) if r.va + r.bytes.len() as u64 == va => r.bytes.extend_from_slice(&buf),
                    _ => code.push(CodeRange { va, bytes: buf }),
                },
                Err(_) => scan.unreadable_pages += 1,
            }
            off += n;
        }
    }
    *budget -= cap - left;
    if scan.unreadable_pages > 0 {
        scan.notes.push(format!(
            "{}: {} code page(s) could not be read (paged out or not in the dump); pool calls there are not seen",
            module.name, scan.unreadable_pages
        ));
    }
    scan.code_bytes = code.iter().map(|r| r.bytes.len() as u64).sum();
    code
}

/// Step 2: where the code is cut into regions for the data-flow: function
/// starts and ends (RUNTIME_FUNCTIONs), direct call targets, and every
/// [`MAX_REGION_BYTES`] of a longer region.
fn region_cuts<M: Memory + ?Sized>(
    walker: &mut StackWalker,
    mem: &M,
    m: usize,
    code: &[CodeRange],
    scan: &mut ModuleScan,
    stats: &mut ReadStats,
) -> BTreeSet<u64> {
    let base = scan.base.0;
    let mut cuts: BTreeSet<u64> = BTreeSet::new();
    match walker.runtime_functions(mem, m, stats) {
        Ok(fns) => {
            // A hostile entry's RVAs may pass SizeOfImage, and so the top
            // of the address space: only cuts in the code matter.
            for f in fns {
                cuts.extend(base.checked_add(u64::from(f.begin)));
                cuts.extend(base.checked_add(u64::from(f.end)));
            }
        }
        Err(e) => scan
            .notes
            .push(format!("{}: the exception directory: {e}", scan.module)),
    }
    let in_code = |va: u64| code.iter().any(|r| r.contains(va));
    for r in code {
        flow::direct_call_targets(r.va, &r.bytes, |t| {
            if in_code(t) {
                cuts.insert(t);
            }
        });
    }
    // A region longer than this is cut (a hostile or absurd function):
    // what flows across the cut is forgotten, memory stays bounded.
    for r in code {
        let end = r.va + r.bytes.len() as u64;
        let starts: Vec<u64> = std::iter::once(r.va)
            .chain(cuts.range(r.va + 1..end).copied())
            .chain(std::iter::once(end))
            .collect();
        for w in starts.windows(2) {
            let mut at = w[0].saturating_add(MAX_REGION_BYTES);
            while at < w[1] {
                cuts.insert(at);
                at = at.saturating_add(MAX_REGION_BYTES);
            }
        }
    }
    cuts
}

/// The import slot a call or jump goes through, and how: `[rip+slot]`, a
/// thunk (`jmp [__imp_X]`) it calls, or a register the data-flow knows
/// holds one slot's value. `None` for anything else, and for a thunk
/// itself (a tail jump through a slot that nothing flows into: its callers
/// are the sites).
fn call_slot(
    ins: &iced_x86::Instruction,
    cp: &flow::CallPoint,
    tail: bool,
    thunk: &dyn Fn(u64) -> Option<u64>,
) -> Option<(u64, CallVia)> {
    match ins.op0_kind() {
        OpKind::Memory
            if ins.memory_base() == Register::RIP && ins.memory_index() == Register::None =>
        {
            (!(tail && cp.unreached)).then(|| (ins.memory_displacement64(), CallVia::Iat))
        }
        OpKind::NearBranch64 => {
            let t = ins.near_branch_target();
            thunk(t).map(|slot| (slot, CallVia::Thunk { thunk: KernelVa(t) }))
        }
        OpKind::Register => {
            let reg = ins.op0_register();
            let Some(flow::Val::Set(v)) = flow::gpr(reg).map(|n| &cp.state[n]) else {
                return None;
            };
            let slots: BTreeSet<u64> = v
                .iter()
                .map(|s| match s {
                    flow::Src::Load { slot } => Some(*slot),
                    _ => None,
                })
                .collect::<Option<_>>()
                .unwrap_or_default();
            (slots.len() == 1).then(|| {
                (
                    *slots.iter().next().expect("one slot"),
                    CallVia::Register {
                        register: format!("{reg:?}").to_lowercase(),
                    },
                )
            })
        }
        _ => None,
    }
}

/// The tags the tag register may hold at the call: every immediate that
/// flows into it, or `None` when any value comes from memory (unknown).
fn tag_values(cp: &flow::CallPoint, arg: TagArg) -> Option<Vec<TagValue>> {
    let Some(flow::Val::Set(v)) = arg.state_index().map(|n| &cp.state[n]) else {
        return None;
    };
    let mut out = Vec::new();
    for s in v {
        match *s {
            flow::Src::Imm { value, insn, imm } => out.push(TagValue {
                tag: PoolTag(value as u32),
                instruction: KernelVa(insn),
                immediate: imm.map(KernelVa),
            }),
            flow::Src::Load { .. } | flow::Src::Field { .. } | flow::Src::Addr { .. } => {
                return None;
            }
        }
    }
    Some(out)
}

struct CodeRange {
    va: u64,
    bytes: Vec<u8>,
}

impl CodeRange {
    fn contains(&self, va: u64) -> bool {
        va >= self.va && va - self.va < self.bytes.len() as u64
    }
}
