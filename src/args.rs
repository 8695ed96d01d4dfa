//! Argument groups several commands share: how to read a kernel's pool
//! table ([`ReadArgs`]) and which rows to show ([`FilterArgs`],
//! [`PoolChoice`]).

use std::path::PathBuf;

use anyhow::Result;
use pooldump_core::pool::{PoolClass, PoolTagDb, TagPattern};

use crate::common::SymbolArgs;

/// How to read a kernel's pool table.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// A pooltag.txt (WinDbg's triage\pooltag.txt) for the Mapped_Driver
    /// column.
    #[arg(long, value_name = "FILE")]
    pub pooltag: Option<PathBuf>,
    /// Do not search the loaded drivers' images for tags pooltag.txt lacks.
    #[arg(long)]
    pub no_image_search: bool,
}

impl ReadArgs {
    pub fn pooltag_db(&self) -> Result<Option<PoolTagDb>> {
        let Some(p) = &self.pooltag else {
            return Ok(None);
        };
        Ok(Some(crate::common::load_pooltag(p)?))
    }
}

/// Which rows to show: PoolMon's P key and its /i and /x patterns.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only this pool: paged, nonpaged or both (PoolMon's P key).
    #[arg(long, value_enum, default_value_t = PoolChoice::Both)]
    pub pool: PoolChoice,
    /// Show only tags matching PATTERN (PoolMon's /i: `?` one character,
    /// `*` any, case-sensitive, 0x... for a value); may be repeated.
    #[arg(short, long = "include", value_name = "PATTERN")]
    pub include: Vec<TagPattern>,
    /// Hide tags matching PATTERN (PoolMon's /x); may be repeated.
    #[arg(short = 'x', long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<TagPattern>,
}

/// PoolMon's P key cycles through these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolChoice {
    Both,
    #[value(alias = "p")]
    Paged,
    #[value(alias = "nonp", alias = "np")]
    Nonpaged,
}

impl PoolChoice {
    pub fn class(self) -> Option<PoolClass> {
        match self {
            PoolChoice::Both => None,
            PoolChoice::Paged => Some(PoolClass::Paged),
            PoolChoice::Nonpaged => Some(PoolClass::NonPaged),
        }
    }
}
