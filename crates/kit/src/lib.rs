//! pooldump-kit: synthetic Windows kernels for tests, benchmarks and the
//! bundled sample.
//!
//! Nothing real can be reached here (no Windows machine, crash dump or
//! symbol server), so the kit builds machines faithful enough that tools
//! nobody on this project wrote accept them as Windows: a real x64 page
//! walk, real dump headers, the committed nt image and PDB of a real build
//! (testdata/nt/, with that build's GUID and struct layouts), and pool
//! state laid out as the kernel keeps it. Every choice it makes is recorded
//! in a [`truth::GroundTruth`], so tests compare pooldump against the
//! scenario rather than against pooldump.
//!
//! ```no_run
//! use pooldump_kit::{DumpKind, Machine, NtBuild, Scenario};
//! let m = Machine::build(&Scenario::small(NtBuild::Win10_19041, 7));
//! m.write_dump_file(DumpKind::KernelBitmap, "MEMORY.DMP".as_ref()).unwrap();
//! m.write_symbol_store("symbols".as_ref()).unwrap();
//! println!("{}", m.truth.to_json());
//! ```

pub mod builds;
pub mod bulk;
pub mod corrupt;
pub mod crash_stack;
pub mod drivers;
pub mod dump;
pub mod fleet;
mod globals;
pub mod kdbg;
pub mod layout;
pub mod machine;
pub mod paging;
pub mod pe;
pub mod phys;
mod pool;
pub mod run;
pub mod scenario;
pub mod series;
pub mod session;
mod session_pool;
pub mod tag;
pub mod tracker;
pub mod triage;
pub mod truth;

pub use builds::NtBuild;
pub use crash_stack::CrashThread;
pub use dump::DumpKind;
pub use machine::Machine;
pub use scenario::{
    HeapKeyDerivation, PoolKind, Scenario, SessionSpec, SessionTagSpec, SizeSpec, TagSpec,
};
pub use truth::GroundTruth;
