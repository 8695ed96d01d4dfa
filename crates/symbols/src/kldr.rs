//! The loaded-module entry (`_KLDR_DATA_TABLE_ENTRY`) as offsets: what a
//! walk of `PsLoadedModuleList` reads, before symbols (a bootstrap table
//! the memory side keeps) and after (from the symbols' own layout).

use serde::Serialize;

use crate::kernel_symbols::{KernelSymbols, SymbolError};

/// `_KLDR_DATA_TABLE_ENTRY` offsets a module-list walk reads: before
/// nt's PDB is loaded, [`KLDR_BOOTSTRAP`]; after,
/// [`KernelSymbols::kldr_layout`], which
/// [`KernelSymbols::check_kldr_bootstrap`] compares with the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KldrLayout {
    /// InLoadOrderLinks: LIST_ENTRY {Flink +0, Blink +8}.
    pub in_load_order_links: usize,
    /// DllBase: the image's base address.
    pub dll_base: usize,
    /// EntryPoint.
    pub entry_point: usize,
    /// SizeOfImage: ULONG.
    pub size_of_image: usize,
    /// FullDllName: UNICODE_STRING {Length u16 +0, MaximumLength u16 +2, Buffer +8}.
    pub full_dll_name: usize,
    /// BaseDllName: UNICODE_STRING.
    pub base_dll_name: usize,
    /// Bytes to read per entry: through BaseDllName. Derived from the
    /// offsets above, so not part of the layout as serialised.
    #[serde(skip)]
    pub read_size: usize,
}

/// The stable x64 bootstrap layout: `_KLDR_DATA_TABLE_ENTRY` offsets used
/// *before* nt's PDB is loaded.
///
/// These x64 offsets have not changed from Vista to Windows 11 24H2 (the
/// struct only grew at its end), and they are what WinDbg, kdmp-parser and
/// Volatility bootstrap with. Once the PDB is loaded, later code checks
/// them against the real layout and can pass a corrected table.
pub const KLDR_BOOTSTRAP: KldrLayout = KldrLayout {
    in_load_order_links: 0x00,
    dll_base: 0x30,
    entry_point: 0x38,
    size_of_image: 0x40,
    full_dll_name: 0x48,
    base_dll_name: 0x58,
    read_size: 0x68,
};

impl KernelSymbols {
    /// The loaded-module entry layout from `_KLDR_DATA_TABLE_ENTRY` (or
    /// `_LDR_DATA_TABLE_ENTRY`, which Win7/8.1 symbols use).
    pub fn kldr_layout(&self) -> Result<(KldrLayout, &'static str), SymbolError> {
        let ty = ["_KLDR_DATA_TABLE_ENTRY", "_LDR_DATA_TABLE_ENTRY"]
            .into_iter()
            .find(|t| self.has_type(t))
            .ok_or_else(|| SymbolError::MissingType {
                name: "_KLDR_DATA_TABLE_ENTRY".into(),
                symbols: self.describe(),
            })?;
        let off = |f: &str| -> Result<usize, SymbolError> {
            let o = self.field(ty, f)?.offset;
            usize::try_from(o).map_err(|_| SymbolError::BadPath {
                path: format!("{ty}.{f}"),
                detail: format!("offset {o:#x} does not fit"),
            })
        };
        let base_dll_name = off("BaseDllName")?;
        let full_dll_name = off("FullDllName")?;
        let l = KldrLayout {
            in_load_order_links: off("InLoadOrderLinks")?,
            dll_base: off("DllBase")?,
            entry_point: off("EntryPoint")?,
            size_of_image: off("SizeOfImage")?,
            full_dll_name,
            base_dll_name,
            // Through the end of both UNICODE_STRINGs.
            read_size: base_dll_name.max(full_dll_name) + 0x10,
        };
        Ok((l, ty))
    }

    /// Compare the bootstrap offsets the module walk used before symbols
    /// were loaded with the symbols' layout: a message per difference.
    pub fn check_kldr_bootstrap(&self, bootstrap: &KldrLayout) -> Result<Vec<String>, SymbolError> {
        let (l, ty) = self.kldr_layout()?;
        let mut out = Vec::new();
        let pairs = [
            (
                "InLoadOrderLinks",
                bootstrap.in_load_order_links,
                l.in_load_order_links,
            ),
            ("DllBase", bootstrap.dll_base, l.dll_base),
            ("EntryPoint", bootstrap.entry_point, l.entry_point),
            ("SizeOfImage", bootstrap.size_of_image, l.size_of_image),
            ("FullDllName", bootstrap.full_dll_name, l.full_dll_name),
            ("BaseDllName", bootstrap.base_dll_name, l.base_dll_name),
        ];
        for (name, boot, real) in pairs {
            if boot != real {
                out.push(format!(
                    "{ty}.{name} is at {real:#x} in {}, but the module list was walked with the bootstrap offset {boot:#x}; walk it again with the symbols' layout",
                    self.identity
                ));
            }
        }
        Ok(out)
    }
}
