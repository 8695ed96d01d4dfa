//! Relabelling: one fresh tag per allocation site of a leaking tag, so the
//! tracker counts each site apart (docs/relabel.md).
//!
//! A [`RelabelMap`] (`relabel.json`, schema [`SCHEMA`]) records what was
//! patched where: the target (nt's PDB identity and KernBase), each patched
//! module (name, base, TimeDateStamp, SizeOfImage), and per site its kind,
//! the old and new tag, the immediate's address and the bytes before and
//! after. [`plan`] computes it from the sites `callsites` found, with tags
//! from a [`TagChooser`]; [`RelabelMap::writes`] are the bytes to write,
//! [`RelabelMap::site_states`] and [`RelabelMap::undo_plan`] say which
//! sites still hold our bytes (undo restores only those), and
//! [`RelabelMap::check_target`] / [`RelabelMap::check_modules`] refuse a
//! map made for another kernel, boot or driver build.
//!
//! Free sites get the tag 0, which is what ExFreePool passes to
//! ExFreePoolWithTag: Windows compares a free's tag with the block's only
//! for PROTECTED_POOL tags (and then breaks into the debugger rather than
//! bug-checking), and segment-heap builds do not look at it at all, so 0
//! is safe on every build, whichever new tag the freed block carries.
//! Protected tags are refused for that reason. docs/relabel.md has the
//! evidence.
//!
//! The map is versioned like the snapshots: additions keep the version,
//! a change an older reader would misread bumps it.
//!
//! This file is the module's face; `map.rs` holds the map and its errors,
//! `plan.rs` makes one, `chooser.rs` picks the fresh tags, `patch.rs`
//! patches a driver file, `usage.rs` reads the tracker's rows per site,
//! and `hex.rs` is how the map writes addresses and bytes.

mod chooser;
mod hex;
mod map;
mod patch;
mod plan;
mod usage;

pub use chooser::TagChooser;
pub use map::{
    MapModule, MapSite, PatchWrite, RelabelError, RelabelMap, SCHEMA, SiteState, TargetIdentity,
    UndoPlan,
};
pub use patch::{PatchError, PatchedImage, patch_image, pe_checksum};
pub use plan::{RelabelPlanError, TargetPlan, plan, plan_on_target};
pub use usage::{SiteUsage, quiet_sites, site_usage};

#[cfg(test)]
mod tests;
