//! A crashing thread planted by a test: the header CONTEXT's registers, the
//! stack bytes they point at, and the bug check. Tests that check stack
//! walking build a stack consistent with the images' unwind data and plant
//! it here (until the kit runs real code and plants its own).

use crate::machine::Machine;
use crate::phys::PAGE64;

/// What to plant.
#[derive(Debug, Clone, Default)]
pub struct CrashThread {
    pub rip: u64,
    pub rsp: u64,
    /// Rax..R15 in encoding order; the Rsp slot is ignored (`rsp` wins).
    pub gprs: [u64; 16],
    /// Bytes to write, each inside [`Machine::crash_stack`].
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Bug check code and parameters, when they change.
    pub bugcheck: Option<(u32, [u64; 4])>,
}

impl Machine {
    /// The crashing thread's kernel stack: the two nonpaged pages the
    /// header's CONTEXT points into.
    pub fn crash_stack(&self) -> std::ops::Range<u64> {
        self.stack..self.stack + 2 * PAGE64
    }

    /// Plant `t`: write its stack bytes and set the dump header's CONTEXT
    /// (and bug check). Panics on a write outside the crash stack: that is
    /// a bug in the test, not input.
    pub fn plant_crash_thread(&mut self, t: &CrashThread) {
        let range = self.crash_stack();
        for (va, bytes) in &t.writes {
            assert!(
                range.contains(va) && va + bytes.len() as u64 <= range.end,
                "{va:#x}+{:#x} is outside the crash stack {range:x?}",
                bytes.len()
            );
            self.write_va(*va, bytes);
        }
        self.header.context_rip = t.rip;
        self.header.context_rsp = t.rsp;
        self.header.context_gprs = t.gprs;
        if let Some((code, parameters)) = t.bugcheck {
            self.header.bugcheck_code = code;
            self.header.bugcheck_parameters = parameters;
        }
    }
}
