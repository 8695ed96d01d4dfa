//! A PDB (MSF 7): identity, the type stream into struct layouts, the
//! global symbols into RVAs (crates/symbols/src/pdb/), then the
//! lookups the analysis makes on the result; and the same bytes as a
//! driver's PDB read by the stack symbolizer (publics, the modules'
//! procedures: crates/core/src/stack/symbolize.rs).
use std::path::Path;

use pooldump_core::symbols::pdb::read_pdb_bytes;

pub fn run(data: &[u8]) {
    let _ = pooldump_core::stack::count_pdb_functions(data);
    let Ok((_, layouts, _)) = read_pdb_bytes(data, Path::new("fuzz.pdb"), "ntkrnlmp.pdb", None)
    else {
        return;
    };
    for (name, t) in layouts.types.iter().take(64) {
        let _ = (name.len(), t.size, t.field("Key"));
    }
    let _ = layouts.gap_to_next_symbol("PoolTrackTable");
}
