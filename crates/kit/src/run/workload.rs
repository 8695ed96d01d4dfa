//! What the running machine does: driver work items queued at set rates on
//! a simulated clock.
//!
//! Each item names a driver and the request its worker routine receives
//! (the drivers' sources in testdata/drivers/ say what each `kind` does);
//! it runs every `every_ms` simulated milliseconds, `burst` times in a row.

use serde::{Deserialize, Serialize};

/// One recurring work item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItem {
    /// A name for reports ("leak-steady").
    pub name: String,
    /// The driver whose worker routine runs (`leakydrv.sys`).
    pub driver: String,
    /// The request the routine receives: Kind, Flags, Length, Context.
    pub kind: u32,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub length: u64,
    #[serde(default)]
    pub context: u64,
    /// Simulated milliseconds between runs.
    pub every_ms: u64,
    /// Simulated milliseconds before the first run.
    #[serde(default)]
    pub start_ms: u64,
    /// Runs per tick.
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl WorkItem {
    /// leakydrv's LkTouch (request kind 7), once a second: it writes
    /// through the request's `context`, so a bad pointer there is a page
    /// fault in a driver, and a bug check.
    pub fn touch(context: u64) -> Self {
        Self {
            context,
            ..item("touch", "leakydrv.sys", 7, 0, 0x5A5A, 1000, 0)
        }
    }
}

/// A set of work items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub items: Vec<WorkItem>,
}

fn item(
    name: &str,
    driver: &str,
    kind: u32,
    flags: u32,
    length: u64,
    every_ms: u64,
    start_ms: u64,
) -> WorkItem {
    WorkItem {
        name: name.into(),
        driver: driver.into(),
        kind,
        flags,
        length,
        context: 0,
        every_ms,
        start_ms,
        burst: 1,
    }
}

impl Workload {
    /// The network machine's ([`Scenario::ndis`](crate::Scenario::ndis)):
    /// the leak workload, and the miniport nicmini.sys receiving a buffer
    /// through NDIS's allocator every 500 ms and returning the oldest every
    /// 700 ms, so its 'NmRx' grows.
    pub fn network() -> Self {
        Self::leak().with([
            item("nic-receive", "nicmini.sys", 0, 0, 0, 500, 100),
            item("nic-return", "nicmini.sys", 1, 0, 0, 700, 300),
        ])
    }

    /// The KMDF machine's ([`Scenario::kmdf`](crate::Scenario::kmdf)): the
    /// leak workload; read requests the framework Wdf01000.sys dispatches to
    /// kmdfdrv.sys every 400 ms (a request object, and the driver's buffer
    /// for it, both with its DriverPoolTag 'KmDr'), the oldest request
    /// completed every 600 ms; the driver's own 'KmBf' buffers
    /// (WdfMemoryCreate) every 500 ms, and its oldest buffer deleted
    /// (WdfObjectDelete) every 900 ms.
    pub fn kmdf() -> Self {
        Self::leak().with([
            item("wdf-read", "Wdf01000.sys", 0, 0, 0x180, 400, 100),
            item("wdf-complete", "Wdf01000.sys", 1, 0, 0, 600, 300),
            item("kmdf-buffer", "kmdfdrv.sys", 0, 0, 0x200, 500, 200),
            item("kmdf-delete", "kmdfdrv.sys", 1, 0, 0, 900, 400),
        ])
    }

    /// These items too.
    pub fn with(mut self, items: impl IntoIterator<Item = WorkItem>) -> Self {
        self.items.extend(items);
        self
    }

    /// The leak hunt's machine: leakydrv leaks one 'Leak' record every 2 s
    /// (LeakOneRecord), queues and completes 'Leak' work items at the same
    /// rate (balanced), bursts six big 'Leak' cache buffers every 30 s and
    /// trims them back to four; netsim's receive buffers are balanced;
    /// fsfilt leaks an 'FsFl' context per double open; a self-check prints
    /// once a minute.
    pub fn leak() -> Self {
        let mut burst = item("leak-burst", "leakydrv.sys", 4, 0, 6, 30_000, 7_000);
        burst.burst = 1;
        Self {
            items: vec![
                item("leak-steady", "leakydrv.sys", 0, 0, 0x40, 2_000, 500),
                item("leak-queue", "leakydrv.sys", 1, 0, 12, 1_000, 250),
                item("leak-complete", "leakydrv.sys", 2, 0, 0, 1_000, 750),
                burst,
                item("leak-trim", "leakydrv.sys", 5, 0, 0, 30_000, 22_000),
                item("buffer", "leakydrv.sys", 3, 0, 0x3000, 20_000, 3_000),
                item("nic-receive", "netsim.sys", 0, 0, 1514, 400, 100),
                item("nic-complete", "netsim.sys", 1, 0, 0, 400, 300),
                item("fs-open-twice", "fsfilt.sys", 0, 1, 0, 15_000, 5_000),
                item(
                    "self-check",
                    "leakydrv.sys",
                    6,
                    0,
                    1_000_000,
                    60_000,
                    59_000,
                ),
            ],
        }
    }

    /// Nothing runs: the machine only answers the debugger.
    pub fn idle() -> Self {
        Self { items: Vec::new() }
    }
}

/// When each item runs next.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    next: Vec<u64>,
}

impl Schedule {
    pub fn new(w: &Workload) -> Self {
        Self {
            next: w.items.iter().map(|i| i.start_ms * 1_000_000).collect(),
        }
    }

    /// The earliest item due at or before `until_ns`, with its due time;
    /// moves that item's next run on.
    pub fn pop_due(&mut self, w: &Workload, until_ns: u64) -> Option<(usize, u64)> {
        let (i, &t) = self
            .next
            .iter()
            .enumerate()
            .filter(|(i, _)| w.items[*i].every_ms > 0)
            .min_by_key(|(i, t)| (**t, *i))?;
        if t > until_ns {
            return None;
        }
        self.next[i] = t + w.items[i].every_ms * 1_000_000;
        Some((i, t))
    }
}
