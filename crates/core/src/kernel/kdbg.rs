//! KDDEBUGGER_DATA64, the debugger data block (docs/pool-structures.md §1).
//!
//! Header: LIST_ENTRY64 +0, OwnerTag 'KDBG' +0x10, Size +0x14; then
//! KernBase +0x18 and, each holding the *address* of a kernel variable,
//! PsLoadedModuleList +0x48, PoolTrackTable +0x1B8 and so on.
//!
//! Crash dumps hold the block decoded (KeBugCheck2 decodes it). Live dumps
//! and systems booted without a debugger on Win8+ keep it encoded; decoding
//! needs three values from nt's symbols ([`KdbgKeys`]), which a later stage
//! supplies.

use serde::Serialize;

use crate::addr::{KernelVa, PhysAddr};
use crate::bytes::Le;
use crate::memory::{Memory, MemoryError};

/// OwnerTag of a decoded block: the bytes "KDBG".
pub const KDBG_TAG: u32 = u32::from_le_bytes(*b"KDBG");
/// The smallest plausible Size. x64 builds use 0x340..0x3A0; anything
/// outside [`MIN_SIZE`]..=[`MAX_SIZE`] is not a KDBG.
pub const MIN_SIZE: u32 = 0x80;
/// The largest plausible Size.
pub const MAX_SIZE: u32 = 0x1000;

/// Field offsets in KDDEBUGGER_DATA64 (x64; fixed by the debugger ABI).
pub mod off {
    /// Header.OwnerTag ('KDBG').
    pub const OWNER_TAG: usize = 0x10;
    /// Header.Size.
    pub const SIZE: usize = 0x14;
    /// KernBase.
    pub const KERN_BASE: usize = 0x18;
    /// PsLoadedModuleList.
    pub const PS_LOADED_MODULE_LIST: usize = 0x48;
    /// PsActiveProcessHead.
    pub const PS_ACTIVE_PROCESS_HEAD: usize = 0x50;
    /// MmPfnDatabase.
    pub const MM_PFN_DATABASE: usize = 0xC0;
    /// PoolTrackTable.
    pub const POOL_TRACK_TABLE: usize = 0x1B8;
    /// KiProcessorBlock.
    pub const KI_PROCESSOR_BLOCK: usize = 0x218;
}

/// A decoded KDDEBUGGER_DATA64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KdDebuggerData {
    /// Where the block is, when known (from the dump header, or confirmed
    /// through its list links after a physical scan).
    pub va: Option<KernelVa>,
    /// Where a physical scan found it.
    pub pa: Option<PhysAddr>,
    /// Header.Size: the block's length in bytes as the kernel states it.
    pub size: u32,
    /// KernBase: where ntoskrnl is loaded.
    pub kern_base: KernelVa,
    /// PsLoadedModuleList: the address of the loaded-module list head.
    pub ps_loaded_module_list: KernelVa,
    /// PsActiveProcessHead: the address of the process list head.
    pub ps_active_process_head: KernelVa,
    /// The block was encoded in memory and decoded with [`KdbgKeys`].
    pub was_encoded: bool,
    /// The block's bytes (at most `size`, decoded), for fields read later.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

impl KdDebuggerData {
    /// A 64-bit field by offset, if the block is that long.
    pub fn field_u64(&self, offset: usize) -> Option<u64> {
        Le(&self.raw).u64(offset)
    }

    /// Parse a decoded block from its bytes (at least up to +0x58).
    pub fn parse(bytes: &[u8]) -> Result<Self, KdbgError> {
        let b = Le(bytes);
        let tag = b
            .u32(off::OWNER_TAG)
            .ok_or(KdbgError::Short { len: bytes.len() })?;
        if tag != KDBG_TAG {
            return Err(KdbgError::NotKdbg { tag });
        }
        let size = b.u32(off::SIZE).unwrap_or(0);
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(KdbgError::BadSize { size });
        }
        let q = |o: usize| b.u64(o).ok_or(KdbgError::Short { len: bytes.len() });
        let raw = &bytes[..bytes.len().min(size as usize)];
        Ok(Self {
            va: None,
            pa: None,
            size,
            kern_base: KernelVa(q(off::KERN_BASE)?),
            ps_loaded_module_list: KernelVa(q(off::PS_LOADED_MODULE_LIST)?),
            ps_active_process_head: KernelVa(q(off::PS_ACTIVE_PROCESS_HEAD)?),
            was_encoded: false,
            raw: raw.to_vec(),
        })
    }
}

/// Why a KDBG could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdbgError {
    /// The block's memory could not be read.
    #[error("cannot read it: {0}")]
    Unreadable(MemoryError),
    /// OwnerTag is not 'KDBG': the block is encoded and no keys decoded
    /// it, or this is not a KDBG.
    #[error(
        "it does not hold 'KDBG' (OwnerTag {tag:#010x}): the block is probably encoded (a live dump, or a system booted without a debugger), and decoding it needs KiWaitNever, KiWaitAlways and KdpDataBlockEncoded from nt's symbols"
    )]
    NotKdbg {
        /// OwnerTag as read (after decoding, when keys were given).
        tag: u32,
    },
    /// Size is outside [`MIN_SIZE`]..=[`MAX_SIZE`].
    #[error("its Size {size:#x} is not plausible (a KDBG is {MIN_SIZE:#x} to {MAX_SIZE:#x} bytes)")]
    BadSize {
        /// Header.Size as read.
        size: u32,
    },
    /// Too few bytes for the fields read.
    #[error("only {len} bytes of it are readable")]
    Short {
        /// Bytes that could be read.
        len: usize,
    },
}

/// The three values the Win8+ KDBG encoding is keyed on, from nt's
/// symbols: the values of `KiWaitNever` and `KiWaitAlways` and the
/// *address* of the byte flag `KdpDataBlockEncoded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdbgKeys {
    /// The value of nt!KiWaitNever.
    pub ki_wait_never: u64,
    /// The value of nt!KiWaitAlways.
    pub ki_wait_always: u64,
    /// The address of nt!KdpDataBlockEncoded.
    pub kdp_data_block_encoded: KernelVa,
}

/// Decode one qword (docs/pool-structures.md §1):
/// `KiWaitAlways ^ bswap64(&KdpDataBlockEncoded ^ rol64(enc ^ KiWaitNever, KiWaitNever & 0x3F))`.
pub fn decode_qword(enc: u64, keys: &KdbgKeys) -> u64 {
    let rotated = (enc ^ keys.ki_wait_never).rotate_left((keys.ki_wait_never & 0x3F) as u32);
    keys.ki_wait_always ^ (keys.kdp_data_block_encoded.0 ^ rotated).swap_bytes()
}

/// Decode a block in place, qword by qword (a trailing partial qword is
/// left as is).
pub fn decode_block(bytes: &mut [u8], keys: &KdbgKeys) {
    for q in bytes.chunks_exact_mut(8) {
        let v = u64::from_le_bytes(q.try_into().unwrap_or([0; 8]));
        q.copy_from_slice(&decode_qword(v, keys).to_le_bytes());
    }
}

/// Read the KDBG at `va`. A block whose OwnerTag reads 'KDBG' is taken as
/// decoded; otherwise, with `keys`, it is decoded (the tag and Size are
/// decoded first, then Size bytes).
pub fn read_kdbg<M: Memory + ?Sized>(
    mem: &M,
    va: KernelVa,
    keys: Option<&KdbgKeys>,
) -> Result<KdDebuggerData, KdbgError> {
    let mut head = [0u8; 0x18];
    mem.read_virtual(va, &mut head)
        .map_err(KdbgError::Unreadable)?;
    let tag = Le(&head).u32(off::OWNER_TAG).unwrap_or(0);
    let encoded = tag != KDBG_TAG && keys.is_some();
    if encoded && let Some(k) = keys {
        decode_block(&mut head, k);
    }
    let b = Le(&head);
    let tag = b.u32(off::OWNER_TAG).unwrap_or(0);
    if tag != KDBG_TAG {
        return Err(KdbgError::NotKdbg { tag });
    }
    let size = b.u32(off::SIZE).unwrap_or(0);
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(KdbgError::BadSize { size });
    }
    // Size is bounded above, so this allocation is too.
    let mut raw = vec![0u8; size as usize];
    let n = mem
        .read_virtual_partial(va, &mut raw)
        .map_err(KdbgError::Unreadable)?;
    raw.truncate(n);
    if encoded && let Some(k) = keys {
        decode_block(&mut raw, k);
    }
    let mut kdbg = KdDebuggerData::parse(&raw)?;
    kdbg.va = Some(va);
    kdbg.was_encoded = encoded;
    Ok(kdbg)
}

/// Where the globals the KDBG encoding is keyed on are, from nt's symbols
/// (KernBase plus each RVA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdbgKeyVas {
    /// nt!KdpDataBlockEncoded.
    pub kdp_data_block_encoded: KernelVa,
    /// nt!KiWaitNever.
    pub ki_wait_never: KernelVa,
    /// nt!KiWaitAlways.
    pub ki_wait_always: KernelVa,
}

/// Read the encoding keys; the flag is whether `KdpDataBlockEncoded` says
/// the block is currently encoded.
pub fn read_kdbg_keys<M: Memory + ?Sized>(
    mem: &M,
    vas: &KdbgKeyVas,
) -> Result<(KdbgKeys, bool), MemoryError> {
    let mut flag = [0u8; 1];
    mem.read_virtual(vas.kdp_data_block_encoded, &mut flag)?;
    let mut q = [0u8; 8];
    mem.read_virtual(vas.ki_wait_never, &mut q)?;
    let ki_wait_never = u64::from_le_bytes(q);
    mem.read_virtual(vas.ki_wait_always, &mut q)?;
    let ki_wait_always = u64::from_le_bytes(q);
    Ok((
        KdbgKeys {
            ki_wait_never,
            ki_wait_always,
            kdp_data_block_encoded: vas.kdp_data_block_encoded,
        },
        flag[0] != 0,
    ))
}
