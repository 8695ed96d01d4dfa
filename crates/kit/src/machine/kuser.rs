//! KUSER_SHARED_DATA: the page the kernel shares with user mode, mapped at
//! its fixed kernel address and at 0x7FFE0000, with the clocks, the build
//! and the processor count the analysis reads; the running machine moves
//! its clocks.

use crate::layout::StructBuf;
use crate::paging::Prot;

use super::{KUSER_SHARED_DATA, KUSER_SHARED_DATA_USER, Machine};

/// 100 ns ticks between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

impl Machine {
    /// KUSER_SHARED_DATA: one frame, mapped at its fixed kernel address and
    /// at 0x7FFE0000 for user mode.
    pub(super) fn map_kuser_shared_data(&mut self) {
        let f = self.mem.alloc();
        self.asp
            .map(&mut self.mem, KUSER_SHARED_DATA, f, Prot::Data);
        self.asp
            .map(&mut self.mem, KUSER_SHARED_DATA_USER, f, Prot::UserReadOnly);
        let s = &self.scenario;
        let interrupt_time = s.uptime_secs * 10_000_000;
        let system_time = FILETIME_UNIX_EPOCH + s.unix_time * 10_000_000;
        let (major, minor) = match s.build_number() {
            0..9200 => (6, 1),
            9200..10240 => (6, 3),
            _ => (10, 0),
        };
        let ram_pages: u64 = self.mem.runs().iter().map(|r| r.end - r.start).sum();
        let mut k = StructBuf::new(self.m, "_KUSER_SHARED_DATA");
        let ksys = |k: &mut StructBuf, field: &str, v: u64| {
            k.set(&format!("{field}.LowPart"), v & 0xFFFF_FFFF)
                .set(&format!("{field}.High1Time"), v >> 32)
                .set(&format!("{field}.High2Time"), v >> 32);
        };
        ksys(&mut k, "InterruptTime", interrupt_time);
        ksys(&mut k, "SystemTime", system_time);
        k.set_if("NtBuildNumber", s.build_number() as u64)
            .set("NtMajorVersion", major)
            .set("NtMinorVersion", minor)
            .set("NtProductType", 1)
            .set("NumberOfPhysicalPages", ram_pages)
            .set_if("ActiveProcessorCount", s.cpus as u64);
        // TickCount ticks every 15.625 ms.
        let ticks = s.uptime_secs * 64;
        if self
            .m
            .ty("_KUSER_SHARED_DATA")
            .fields
            .contains_key("TickCountQuad")
        {
            k.set("TickCountQuad", ticks);
        }
        let bytes = k.bytes;
        self.write_va(KUSER_SHARED_DATA, &bytes);
        self.truth.kernel.interrupt_time = interrupt_time;
        self.truth.kernel.system_time = system_time;
    }

    /// Advance KUSER_SHARED_DATA's clocks to `elapsed_ns` after the
    /// machine started running, as the clock interrupt does on every tick:
    /// InterruptTime, SystemTime (KSYSTEM_TIME: LowPart, High1Time,
    /// High2Time) and the tick count (every 15.625 ms).
    pub(crate) fn set_clock(&mut self, elapsed_ns: u64) {
        let s = &self.scenario;
        let elapsed_100ns = elapsed_ns / 100;
        let interrupt_time = s.uptime_secs * 10_000_000 + elapsed_100ns;
        let system_time = FILETIME_UNIX_EPOCH + s.unix_time * 10_000_000 + elapsed_100ns;
        let ticks = s.uptime_secs * 64 + elapsed_ns / 15_625_000;
        let ty = self.m.ty("_KUSER_SHARED_DATA");
        let has_tick_quad = ty.fields.contains_key("TickCountQuad");
        for (field, v) in [
            ("InterruptTime", interrupt_time),
            ("SystemTime", system_time),
        ] {
            let at = KUSER_SHARED_DATA + self.m.offset_of("_KUSER_SHARED_DATA", field);
            // High2Time, LowPart, High1Time: the order the kernel writes.
            self.asp.write_u32(&mut self.mem, at + 8, (v >> 32) as u32);
            self.asp.write_u32(&mut self.mem, at, v as u32);
            self.asp.write_u32(&mut self.mem, at + 4, (v >> 32) as u32);
        }
        if has_tick_quad {
            let at = KUSER_SHARED_DATA + self.m.offset_of("_KUSER_SHARED_DATA", "TickCountQuad");
            self.asp.write_u64(&mut self.mem, at, ticks);
        }
        self.truth.kernel.interrupt_time = interrupt_time;
        self.truth.kernel.system_time = system_time;
    }
}
