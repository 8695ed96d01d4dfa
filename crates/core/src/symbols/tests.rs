//! The loader's checks of symbols against the kernel in memory; the
//! symbols themselves are tested in pooldump-symbols.

use std::sync::Arc;

use super::*;
use crate::addr::KernelVa;

/// A kernel at `base` whose image is `size` bytes, with a KDBG that puts
/// PsLoadedModuleList at `base + list`.
fn kernel_at(base: u64, size: u32, list: u64) -> crate::kernel::KernelIdentity {
    use crate::kernel::{KdDebuggerData, KernBaseSource, KernelIdentity, PeImage};
    KernelIdentity {
        kern_base: KernelVa(base),
        found_by: KernBaseSource::KdDebuggerDataBlock,
        image: PeImage {
            base: KernelVa(base),
            machine: 0x8664,
            time_date_stamp: 0,
            size_of_image: size,
            size_of_headers: 0x1000,
            codeview: None,
            warnings: Vec::new(),
        },
        kdbg: Some(KdDebuggerData {
            va: None,
            pa: None,
            size: 0x380,
            kern_base: KernelVa(base),
            ps_loaded_module_list: KernelVa(base + list),
            ps_active_process_head: KernelVa(0),
            was_encoded: false,
            raw: Vec::new(),
        }),
        ps_loaded_module_list: None,
        warnings: Vec::new(),
    }
}

#[test]
fn a_guid_match_is_trusted_only_if_it_fits_the_image() {
    let b = fallback::by_build_number(19041).unwrap();
    let id = b.identity().unwrap();
    let source = SymbolSource::BuiltIn {
        matched_by: BuiltInMatch::Guid,
        build: b.build_string.clone(),
        supplement: false,
    };
    let base = 0xfffff802_b4600000;
    let list = b.layouts.symbols["PsLoadedModuleList"];
    let biggest = *b.layouts.symbols.values().max().unwrap();
    let fits = |size: u32, list: u64| {
        let mut s = KernelSymbols::new(id.clone(), source.clone(), b.layouts.clone());
        check_builtin_fits(&mut s, &kernel_at(base, size, list))
    };
    // The real image: every RVA inside it, the KDBG where the table says.
    let real = u32::try_from(biggest + 0x1000).unwrap();
    assert_eq!(fits(real, list), Ok(()));
    // A small image with the same GUID (the kit's synthetic kernels).
    match fits(0x95000, list) {
        Err(LoadError::BuiltInDoesNotFit(m)) => {
            let why = &m.why;
            assert_eq!(m.entry, "10.0.19041.3324");
            assert!(
                why.contains("beyond the end of this image (SizeOfImage 0x95000)"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A large image whose KDBG disagrees.
    match fits(real, list + 0x40) {
        Err(LoadError::BuiltInDoesNotFit(m)) => {
            let why = &m.why;
            assert!(why.starts_with("it puts PsLoadedModuleList at "), "{why}");
            assert!(why.contains("where this kernel's KDBG says"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A supplement that does not fit is dropped.
    let mut s = KernelSymbols::new(
        id.clone(),
        SymbolSource::Isf {
            path: "x.json".into(),
        },
        Layouts::default(),
    );
    s.push_layer(
        SymbolSource::BuiltIn {
            matched_by: BuiltInMatch::Guid,
            build: b.build_string.clone(),
            supplement: true,
        },
        Arc::new(b.layouts.clone()),
    );
    check_builtin_fits(&mut s, &kernel_at(base, 0x95000, list)).unwrap();
    assert_eq!(s.layers().len(), 1);
}
