//! Warnings: what looked wrong but did not stop a read.
//!
//! A damaged page, a per-CPU table that could not be read, a layout taken
//! from the table of known builds instead of a PDB: none of these stops
//! `analyze`, but a user must see them beside the numbers they qualify. Every
//! report of the front door ([`crate::Target`]) carries them as
//! [`Warning`]s: a [`WarningKind`] saying which part of the reading it
//! concerns, for scripts that filter, and a sentence for people.
//!
//! ```
//! use pooldump_core::{Warning, WarningKind};
//! let w = Warning::new(WarningKind::Tracker, "CPU 3's tracker page is not in the dump");
//! assert_eq!(serde_json::to_string(&w).unwrap(),
//!     r#"{"kind":"tracker","message":"CPU 3's tracker page is not in the dump"}"#);
//! assert_eq!(w.to_string(), "CPU 3's tracker page is not in the dump");
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which part of the reading a [`Warning`] concerns. Serialised in
/// snake_case (`"big_pool"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningKind {
    /// The input file: its header, its page map, pages it lacks.
    Dump,
    /// Finding nt and its identity (KDBG, the PE image).
    Kernel,
    /// Symbols and layouts: the PDB, the ISF, the table of known builds.
    Symbols,
    /// The loaded-module list (PsLoadedModuleList).
    Modules,
    /// The process list (PsActiveProcessHead).
    Processes,
    /// The pool tag tracker tables (PoolTrackTable, per-CPU tables).
    Tracker,
    /// The big-page table (PoolBigPageTable).
    BigPool,
    /// A session's pool tracker.
    SessionPool,
    /// The allocation scan (`find`): regions, pages, pool headers.
    Find,
    /// Mapped_Driver attribution: module images searched for tags.
    Attribution,
    /// Snapshots and what is computed across them (diff, trend).
    Snapshot,
    /// A relabelling map's call sites (`--relabel`).
    Relabel,
    /// Anything else, and warnings read from files that did not say.
    Other,
}

impl WarningKind {
    /// The name as serialised (`"big_pool"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dump => "dump",
            Self::Kernel => "kernel",
            Self::Symbols => "symbols",
            Self::Modules => "modules",
            Self::Processes => "processes",
            Self::Tracker => "tracker",
            Self::BigPool => "big_pool",
            Self::SessionPool => "session_pool",
            Self::Find => "find",
            Self::Attribution => "attribution",
            Self::Snapshot => "snapshot",
            Self::Relabel => "relabel",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What looked wrong but did not stop a read. Displays as its message.
///
/// Deserialises from `{"kind": .., "message": ..}` and, for files written
/// before warnings had kinds (snapshots), from a bare string, whose kind is
/// [`WarningKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WarningRepr")]
pub struct Warning {
    /// The stage that raised it.
    pub kind: WarningKind,
    /// One sentence, naming what and where.
    pub message: String,
}

impl Warning {
    /// A warning of `kind` saying `message`.
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Give every message of a lower-level reader (which collects plain
    /// sentences) the kind of the report it ends up in.
    pub fn all<I>(kind: WarningKind, messages: I) -> Vec<Self>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        messages.into_iter().map(|m| Self::new(kind, m)).collect()
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WarningRepr {
    Structured { kind: WarningKind, message: String },
    Plain(String),
}

impl From<WarningRepr> for Warning {
    fn from(r: WarningRepr) -> Self {
        match r {
            WarningRepr::Structured { kind, message } => Self { kind, message },
            WarningRepr::Plain(message) => Self {
                kind: WarningKind::Other,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_plain_strings() {
        let w = Warning::new(WarningKind::BigPool, "x");
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(j, r#"{"kind":"big_pool","message":"x"}"#);
        assert_eq!(serde_json::from_str::<Warning>(&j).unwrap(), w);
        let old: Vec<Warning> = serde_json::from_str(r#"["an old note"]"#).unwrap();
        assert_eq!(old, vec![Warning::new(WarningKind::Other, "an old note")]);
        assert!(serde_json::from_str::<Warning>(r#"{"kind":"nope","message":"x"}"#).is_err());
    }

    #[test]
    fn as_str_matches_serde() {
        for k in [
            WarningKind::Dump,
            WarningKind::Kernel,
            WarningKind::Symbols,
            WarningKind::Modules,
            WarningKind::Processes,
            WarningKind::Tracker,
            WarningKind::BigPool,
            WarningKind::SessionPool,
            WarningKind::Find,
            WarningKind::Attribution,
            WarningKind::Snapshot,
            WarningKind::Relabel,
            WarningKind::Other,
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
    }
}
