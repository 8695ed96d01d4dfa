//! `--relabel relabel.json` on `analyze` and `find`: the map read, checked
//! against the source's kernel and modules, and its tags turned back into
//! call sites (docs/relabel.md).

use std::path::Path;

use anyhow::{Context, Result, bail};
use pooldump_core::pool::TagPattern;
use pooldump_core::relabel::{RelabelMap, SiteState};
use pooldump_core::{Memory, PoolTag, Target};

/// A map that fits the source, and what looked odd about it.
pub struct Checked {
    pub map: RelabelMap,
    pub warnings: Vec<String>,
    /// Per map site: what its code holds in this memory.
    pub states: Vec<SiteState>,
}

/// A relabel map larger than this is refused (one site is ~200 bytes).
pub const MAX_MAP_FILE: u64 = 64 << 20;

/// Read the map at `path` and check it against `target` (same nt build and
/// boot, same module loads and builds); say which sites this memory shows
/// relabelled.
pub fn load_and_check<M: Memory>(path: &Path, target: &Target<M>) -> Result<Checked> {
    let bytes = pooldump_core::input::read_capped(path, MAX_MAP_FILE, "a relabel map")?;
    let map = RelabelMap::from_json(&bytes, &path.display().to_string())?;
    let source = target.mem.describe();
    map.check_target(&target.kernel)
        .with_context(|| format!("{}: does not fit {source}", path.display()))?;
    let Some(list) = &target.modules else {
        bail!(
            "{source}: the loaded-module list could not be read, so {} cannot be checked against it",
            path.display()
        );
    };
    map.check_modules(&target.mem, &list.modules)
        .with_context(|| format!("{}: does not fit {source}", path.display()))?;
    let states = map.site_states(&target.mem, &list.modules);
    let mut warnings = Vec::new();
    for (s, st) in map.sites.iter().zip(&states) {
        match st {
            SiteState::Relabelled => {}
            SiteState::Original => warnings.push(format!(
                "{}: the code here still passes {} (the original bytes): this memory is from before the relabel or after an undo, and its allocations count under {}",
                s.site, s.old_tag, map.tag
            )),
            SiteState::Foreign { bytes } => warnings.push(format!(
                "{}: the code here holds {:02x?}, neither the map's bytes nor the original: something else changed it",
                s.site, bytes
            )),
            SiteState::Unreadable { error } => warnings.push(format!(
                "{}: cannot read the patched bytes ({error}); whether this memory ran with the relabel is unknown",
                s.site
            )),
        }
    }
    Ok(Checked {
        map,
        warnings,
        states,
    })
}

/// An exact pattern for `tag` (its text when printable, else its value).
pub fn pattern(tag: PoolTag) -> TagPattern {
    let text = tag.to_string();
    let plain = tag
        .bytes()
        .iter()
        .all(|b| (0x20..0x7F).contains(b) && *b != b'*' && *b != b'?' && *b != b'\\');
    let p = if plain && !text.starts_with("0x") {
        TagPattern::parse(&text)
    } else {
        TagPattern::parse(&format!("0x{:08x}", tag.0))
    };
    p.expect("a tag's own text or value is a valid pattern")
}

/// The tags a map gives out, then its old tag.
pub fn map_tags(map: &RelabelMap) -> Vec<PoolTag> {
    map.alloc_sites()
        .map(|s| s.new_tag)
        .chain(std::iter::once(map.tag))
        .collect()
}

/// The map's free sites (patched to pass 0).
pub fn free_sites(map: &RelabelMap) -> Vec<String> {
    map.sites
        .iter()
        .filter(|s| s.kind == pooldump_core::hittag::PoolCall::Free)
        .map(|s| s.site.clone())
        .collect()
}
