//! nt and the drivers mapped in their in-memory layout, with the
//! protections of their sections, and PsLoadedModuleList listing them.

use crate::drivers;
use crate::layout::StructBuf;
use crate::paging::Prot;
use crate::pe::PeImage;
use crate::phys::{PAGE, PAGE64};
use crate::truth::ModuleTruth;

use super::Machine;

impl Machine {
    /// Map nt at KernBase in its in-memory layout, with the protections of
    /// its sections.
    pub(super) fn map_nt(&mut self) {
        let files = self.scenario.build.files();
        let pe = PeImage::parse(files.image);
        let base = self.kern_base;
        self.map_image(&pe, base);
        let k = &mut self.truth.kernel;
        k.kern_base = base;
        k.size_of_image = pe.size_of_image;
        k.pdb_name = self.m.pdb.name.clone();
        k.pdb_guid = self.m.pdb.guid.clone();
        k.pdb_age = self.m.pdb.age;
        k.store_key = self.m.pdb.store_key.clone();
    }

    pub(crate) fn map_image(&mut self, pe: &PeImage, base: u64) {
        // Drivers import from ntoskrnl.exe, and the miniport from ndis.sys
        // (mapped before it); nt is mapped first.
        let nt_exports: Vec<(String, u64)> = if self.kern_base != 0 && base != self.kern_base {
            PeImage::parse(self.scenario.build.files().image).exports()
        } else {
            Vec::new()
        };
        let kern_base = self.kern_base;
        let drivers = &self.driver_exports;
        let resolve = |dll: &str, name: &str| -> Option<u64> {
            if !dll.eq_ignore_ascii_case("ntoskrnl.exe") {
                return drivers
                    .iter()
                    .find(|(f, n, _)| f.eq_ignore_ascii_case(dll) && n == name)
                    .map(|e| e.2);
            }
            nt_exports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, rva)| kern_base + rva)
        };
        let img = pe.loaded(base, &resolve);
        let hdr_pages = pe.size_of_headers.div_ceil(PAGE64);
        self.commit(base, hdr_pages, Prot::ReadOnly);
        for s in &pe.sections {
            let c = s.characteristics;
            let prot = match (c & 0x2000_0000 != 0, c & 0x8000_0000 != 0) {
                (true, true) => Prot::DataExec,
                (true, false) => Prot::Code,
                (false, true) => Prot::Data,
                (false, false) => Prot::ReadOnly,
            };
            let pages = s.virtual_size.max(s.raw_size).div_ceil(PAGE64);
            self.commit(base + s.rva, pages, prot);
        }
        for p in (0..pe.size_of_image).step_by(PAGE) {
            if self.asp.translate(&self.mem, base + p).is_some() {
                let end = (p + PAGE64).min(img.len() as u64) as usize;
                self.write_va(base + p, &img[p as usize..end]);
            }
        }
    }

    /// The synthetic drivers this machine loads, in load order: none
    /// without [`Scenario::drivers`](crate::Scenario::drivers), the network
    /// pair after the others with [`Scenario::ndis`](crate::Scenario::ndis),
    /// then the KMDF pair with [`Scenario::kmdf`](crate::Scenario::kmdf).
    pub fn drivers(&self) -> Vec<&'static drivers::Driver> {
        if !self.scenario.drivers {
            return Vec::new();
        }
        let pair: &[drivers::Driver] = if self.scenario.ndis {
            drivers::ndis_pair()
        } else {
            &[]
        };
        let kmdf: &[drivers::Driver] = if self.scenario.kmdf {
            drivers::kmdf_pair()
        } else {
            &[]
        };
        drivers::all().iter().chain(pair).chain(kmdf).collect()
    }

    /// PsLoadedModuleList: nt first, then the synthetic drivers, each entry
    /// a pool allocation tagged MmLd as the loader makes it.
    pub(super) fn load_modules(&mut self) {
        let head = self
            .sym_va("PsLoadedModuleList")
            .expect("every build has PsLoadedModuleList");
        let mut modules = vec![ModuleTruth {
            base_name: "ntoskrnl.exe".into(),
            full_name: r"\SystemRoot\system32\ntoskrnl.exe".into(),
            base: self.kern_base,
            size: self.truth.kernel.size_of_image,
            pdb_name: self.m.pdb.name.clone(),
            pdb_guid: self.m.pdb.guid.clone(),
            pdb_age: self.m.pdb.age,
            tags: vec![],
        }];
        if self.scenario.drivers {
            self.map_drivers(&mut modules);
        }
        // Win7 and 8.1 symbol tables call the loader entry
        // _LDR_DATA_TABLE_ENTRY; the kernel-only name came with Windows 10.
        let ldr = if self.m.has_type("_KLDR_DATA_TABLE_ENTRY") {
            "_KLDR_DATA_TABLE_ENTRY"
        } else {
            "_LDR_DATA_TABLE_ENTRY"
        };
        let entry_size = self.m.ty(ldr).size;
        let mut entries = Vec::new();
        for md in &modules {
            let full: Vec<u8> = md
                .full_name
                .encode_utf16()
                .flat_map(|c| c.to_le_bytes())
                .collect();
            let base_off = full.len() as u64 - (md.base_name.len() as u64 * 2);
            let size = entry_size + full.len() as u64 + 2;
            let va = self.kernel_alloc("MmLd", size);
            let names = va + entry_size;
            let mut e = StructBuf::new(self.m, ldr);
            e.set("DllBase", md.base)
                .set("EntryPoint", md.base + 0x1000)
                .set("SizeOfImage", md.size)
                .set("FullDllName.Length", full.len() as u64)
                .set("FullDllName.MaximumLength", full.len() as u64 + 2)
                .set("FullDllName.Buffer", names)
                .set("BaseDllName.Length", md.base_name.len() as u64 * 2)
                .set(
                    "BaseDllName.MaximumLength",
                    md.base_name.len() as u64 * 2 + 2,
                )
                .set("BaseDllName.Buffer", names + base_off)
                .set_if("LoadCount", 1)
                .set_if("Flags", 0x0900_4000);
            let mut bytes = e.bytes;
            bytes.extend_from_slice(&full);
            bytes.extend_from_slice(&[0, 0]);
            self.write_va(va, &bytes);
            entries.push(va);
        }
        // Link the ring through the head.
        let links = self.m.offset_of(ldr, "InLoadOrderLinks");
        let mut ring = vec![head];
        ring.extend(entries.iter().map(|e| e + links));
        for i in 0..ring.len() {
            let flink = ring[(i + 1) % ring.len()];
            let blink = ring[(i + ring.len() - 1) % ring.len()];
            self.write_u64(ring[i], flink);
            self.write_u64(ring[i] + 8, blink);
        }
        self.truth.kernel.ps_loaded_module_list = head;
        self.truth.kernel.modules = modules;
    }

    /// Map the synthetic drivers after the system images' start, each at a
    /// random gap from the last, and list them after nt.
    fn map_drivers(&mut self, modules: &mut Vec<ModuleTruth>) {
        let mut next = self.system_images;
        for d in self.drivers() {
            let pe = PeImage::parse(d.image);
            let align = if self.scenario.build.has_kaslr_regions() {
                0x20_0000
            } else {
                0x1_0000
            };
            let base = next.div_ceil(align) * align;
            next = base + pe.size_of_image + self.rng.u64(1..16) * 0x1_0000;
            self.map_image(&pe, base);
            for (name, rva) in &d.info.exports {
                self.driver_exports
                    .push((d.info.file.clone(), name.clone(), base + rva));
            }
            modules.push(ModuleTruth {
                base_name: d.info.file.clone(),
                full_name: format!(r"\SystemRoot\system32\drivers\{}", d.info.file),
                base,
                size: pe.size_of_image,
                pdb_name: d.info.pdb.name.clone(),
                pdb_guid: d.info.pdb.guid.clone(),
                pdb_age: d.info.pdb.age,
                tags: d.info.tags.clone(),
            });
        }
        self.bind_kmdf(modules);
    }

    /// What WDFLDR.SYS's `WdfVersionBind` and a KMDF driver's DriverEntry
    /// leave behind, for each loaded KMDF driver: its `WdfFunctions_01015`
    /// points at the framework's function table and its `WdfDriverGlobals`
    /// at its globals in the framework's client block, whose DriverTag is
    /// the driver's DriverPoolTag (`WDF_DRIVER_CONFIG`) and whose EvtIoRead
    /// is the callback its queue was created with (`WdfIoQueueCreate`).
    fn bind_kmdf(&mut self, modules: &[ModuleTruth]) {
        let base_of = |file: &str| {
            modules
                .iter()
                .find(|m| m.base_name.eq_ignore_ascii_case(file))
                .map(|m| m.base)
        };
        let drivers = self.drivers();
        let Some(fw) = drivers.iter().find(|d| d.info.framework) else {
            return;
        };
        let fw_base = base_of(&fw.info.file).expect("the framework is mapped");
        let client = fw_base + fw.info.data["FxClient"];
        for d in drivers.iter().filter(|d| d.info.driver_tag.is_some()) {
            let base = base_of(&d.info.file).expect("a KMDF driver is mapped");
            let tag = d.info.driver_tag.as_deref().unwrap_or_default();
            let tag = u32::from_le_bytes(tag.as_bytes().try_into().expect("a 4-byte tag"));
            self.write_u64(
                base + d.info.data["WdfFunctions_01015"],
                fw_base + fw.info.data["FxFunctionTable"],
            );
            self.write_u64(base + d.info.data["WdfDriverGlobals"], client);
            self.write_va(client + fw.info.offsets["driver_tag"], &tag.to_le_bytes());
            self.write_u64(
                client + fw.info.offsets["evt_io_read"],
                base + d.info.callbacks["evt_io_read"],
            );
        }
    }
}
