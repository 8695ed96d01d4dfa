//! `pooldump relabel`: the seeds' last step on a live target. When several
//! places in a driver allocate with the leaking tag, give each allocation
//! site its own tag by editing the tag immediate in the driver's code in
//! memory (free sites get tag 0, which is what ExFreePool passes: see
//! docs/relabel.md for why), let the system run, then count per tag with
//! `analyze`/`find --relabel`. `--undo` puts the original bytes back.
//!
//! The map (`-o relabel.json`) is written before the code is touched, so
//! an undo is possible whatever happens next; a write that does not read
//! back as written rolls every write of the session back. The target is
//! resumed however the command ends.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pooldump_core::pool::PoolTagDb;
use pooldump_core::relabel::{PatchWrite, RelabelMap, plan_on_target};
use pooldump_core::stack::{Symbolizer, SymbolizerOptions};
use pooldump_core::{KernelVa, Memory, PoolTag, Target};
use pooldump_kdnet::{KdnetSpec, LiveTarget};
use serde::Serialize;

use crate::common::{SymbolArgs, connect_live, leave_running};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The live target, with WinDbg's `-k net:` settings:
    /// `port=50000,key=a.b.c.d`.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub kdnet: String,
    /// The tag whose allocation sites get a tag each.
    #[arg(long, value_name = "TAG", required_unless_present = "undo")]
    pub tag: Option<String>,
    /// Relabel only in these drivers (`leakydrv.sys` or `leakydrv`; may be
    /// repeated). Default: every loaded driver.
    #[arg(long, value_name = "DRIVER")]
    pub module: Vec<String>,
    /// Keep the new tags out of this pooltag.txt too.
    #[arg(long, value_name = "FILE")]
    pub pooltag: Option<PathBuf>,
    /// Where to save the map (what was changed where) for `analyze`/`find
    /// --relabel` and `--undo`.
    #[arg(short, long, value_name = "FILE", required_unless_present = "undo")]
    pub out: Option<PathBuf>,
    /// Put back the original bytes of this map's sites (only where the
    /// map's bytes are still there, on the same boot of the same target).
    #[arg(long, value_name = "MAP", conflicts_with_all = ["tag", "out", "module"])]
    pub undo: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sym: SymbolArgs,
}

#[derive(Debug, Serialize)]
struct SiteOut {
    kind: &'static str,
    site: String,
    immediate: KernelVa,
    old_tag: String,
    new_tag: String,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    tag: String,
    map: Option<PathBuf>,
    sites: Vec<SiteOut>,
    /// Undo: sites restored, already original, left alone with why.
    restored: usize,
    already_original: usize,
    refused: Vec<String>,
    notes: Vec<String>,
}

pub fn run(args: &Args) -> Result<String> {
    let spec: KdnetSpec = args
        .kdnet
        .parse()
        .with_context(|| format!("--kdnet {}", args.kdnet))?;
    // Read what we can before touching the target.
    let undo_map = match &args.undo {
        Some(p) => Some(read_map(p)?),
        None => None,
    };
    let tag = match &args.tag {
        Some(t) => Some(PoolTag::parse(t).with_context(|| format!("--tag {t}"))?),
        None => None,
    };
    let pooltag = match &args.pooltag {
        Some(p) => Some(crate::common::load_pooltag(p)?),
        None => None,
    };
    let target = connect_live(&spec, &args.sym)?;
    let r = match (&undo_map, tag) {
        (Some(map), _) => undo(&target, map, args.undo.as_deref().unwrap_or(Path::new(""))),
        (None, Some(tag)) => relabel(args, &target, tag, pooltag.as_ref()),
        (None, None) => unreachable!("clap requires --tag or --undo"),
    };
    // Whatever happened, the target runs.
    leave_running(&target.mem);
    let r = r?;
    Ok(crate::render::json_or_text(args.json, &r, |r| {
        render(r, args)
    })?)
}

fn read_map(p: &Path) -> Result<RelabelMap> {
    let bytes =
        pooldump_core::input::read_capped(p, crate::relabel_rows::MAX_MAP_FILE, "a relabel map")?;
    Ok(RelabelMap::from_json(&bytes, &p.display().to_string())?)
}

fn sites_out(map: &RelabelMap) -> Vec<SiteOut> {
    map.sites
        .iter()
        .map(|s| SiteOut {
            kind: s.kind.as_str(),
            site: s.site.clone(),
            immediate: s.immediate,
            old_tag: s.old_tag.to_string(),
            new_tag: if s.new_tag.value() == 0 {
                "0 (as ExFreePool)".into()
            } else {
                s.new_tag.to_string()
            },
        })
        .collect()
}

/// Write `w.write` where `w.expect` is, checking before and after.
fn apply(t: &LiveTarget, w: &PatchWrite) -> Result<(), String> {
    expect(t, w.va, w.expect, "reading", |now| {
        format!("holds {now:02x?}, not the expected {:02x?}", w.expect)
    })?;
    t.write_virtual(w.va, &w.write)
        .map_err(|e| format!("writing {}: {e}", w.va))?;
    expect(t, w.va, w.write, "reading back", |now| {
        format!("reads back as {now:02x?} after writing {:02x?}", w.write)
    })
}

/// Read the four bytes at `va` (`reading` names the read in an error)
/// and check they are `want`; `differs` says how they are not.
fn expect(
    t: &LiveTarget,
    va: KernelVa,
    want: [u8; 4],
    reading: &str,
    differs: impl FnOnce([u8; 4]) -> String,
) -> Result<(), String> {
    let mut now = [0u8; 4];
    t.read_virtual(va, &mut now)
        .map_err(|e| format!("{reading} {va}: {e}"))?;
    if now == want {
        Ok(())
    } else {
        Err(format!("{va} {}", differs(now)))
    }
}

fn relabel(
    args: &Args,
    target: &Target<LiveTarget>,
    tag: PoolTag,
    pooltag: Option<&PoolTagDb>,
) -> Result<Report> {
    let out = args.out.as_ref().expect("clap requires -o without --undo");
    let opts = args.sym.options(None);
    let mut names = Symbolizer::new(SymbolizerOptions {
        symbol_path: opts.symbol_path,
        fetch: opts.fetch,
        pdb_files: opts.pdb_file.into_iter().collect(),
    });
    let plan = plan_on_target(
        target,
        tag,
        &args.module,
        pooltag,
        &mut names,
        Some(target.mem.build()),
    )
    .context("planning the relabel")?;
    let map = plan.map;
    if map.alloc_sites().next().is_none() {
        bail!(
            "no loaded driver{} passes {tag} to a pool allocator (pooldump callsites --kdnet ... --tag {tag} lists what was found)",
            if args.module.is_empty() {
                String::new()
            } else {
                format!(" among {}", args.module.join(", "))
            }
        );
    }
    let mut notes = plan.notes;
    for u in &plan.unresolved {
        notes.push(format!(
            "a pool call whose tag could not be followed stays as it is: {u:?}"
        ));
    }
    // The map first: whatever happens next, it says what to undo.
    write_map(out, &map)?;
    let writes = map.writes();
    let mut done: Vec<&PatchWrite> = Vec::new();
    for w in &writes {
        if let Err(e) = apply(&target.mem, w) {
            // Roll back what this session wrote, newest first.
            let mut rollback = Vec::new();
            for d in done.iter().rev() {
                let back = PatchWrite {
                    site: d.site,
                    va: d.va,
                    expect: d.write,
                    write: d.expect,
                };
                if let Err(e2) = apply(&target.mem, &back) {
                    rollback.push(e2);
                }
            }
            let _ = std::fs::remove_file(out);
            let site = &map.sites[w.site].site;
            if rollback.is_empty() {
                bail!(
                    "relabelling {site}: {e}; the {} site(s) already written were restored and nothing is changed",
                    done.len()
                );
            }
            bail!(
                "relabelling {site}: {e}; restoring the sites already written failed too: {}",
                rollback.join("; ")
            );
        }
        done.push(w);
    }
    Ok(Report {
        target: format!("KDNET {}", target.mem.peer()),
        tag: tag.to_string(),
        map: Some(out.clone()),
        sites: sites_out(&map),
        restored: 0,
        already_original: 0,
        refused: Vec::new(),
        notes,
    })
}

/// Write the map next to its final place, then rename it there.
fn write_map(out: &Path, map: &RelabelMap) -> Result<()> {
    crate::common::write_atomically(out, map.to_json().as_bytes()).context("saving the map")
}

fn undo(target: &Target<LiveTarget>, map: &RelabelMap, path: &Path) -> Result<Report> {
    let name = path.display();
    map.check_target(&target.kernel).with_context(|| {
        format!("{name}: the map is not for this boot of this target; nothing was changed")
    })?;
    let Some(list) = &target.modules else {
        bail!("the target's loaded-module list could not be read; nothing was changed");
    };
    map.check_modules(&target.mem, &list.modules)
        .with_context(|| format!("{name}: nothing was changed"))?;
    let states = map.site_states(&target.mem, &list.modules);
    let plan = map.undo_plan(&states);
    let mut refused: Vec<String> = plan.refused.iter().map(|(_, why)| why.clone()).collect();
    let mut restored = 0;
    for w in &plan.restore {
        match apply(&target.mem, w) {
            Ok(()) => restored += 1,
            Err(e) => refused.push(format!("{}: {e}", map.sites[w.site].site)),
        }
    }
    Ok(Report {
        target: format!("KDNET {}", target.mem.peer()),
        tag: map.tag.to_string(),
        map: Some(path.to_path_buf()),
        sites: sites_out(map),
        restored,
        already_original: plan.already_original.len(),
        refused,
        notes: Vec::new(),
    })
}

fn render(r: &Report, args: &Args) -> String {
    let mut o = String::new();
    let map = r
        .map
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if args.undo.is_some() {
        o.push_str(&format!(
            "{}: undo of {map} (tag {}): {} site(s) restored, {} already original, {} left alone; the target was resumed.\n",
            r.target,
            r.tag,
            r.restored,
            r.already_original,
            r.refused.len()
        ));
        for why in &r.refused {
            o.push_str(&format!("  left alone: {why}\n"));
        }
        return o;
    }
    o.push_str(&format!(
        "{}: {} site(s) of {} relabelled, the map saved to {map}; the target was resumed.\n\n",
        r.target,
        r.sites.len(),
        r.tag
    ));
    let w = crate::render::widest(r.sites.iter().map(|s| s.site.as_str()), 4);
    o.push_str(&format!(
        " {:<5}  {:<w$}  {:<4}  {:<17}  Immediate\n",
        "Kind", "Site", "Old", "New"
    ));
    for s in &r.sites {
        o.push_str(&format!(
            " {:<5}  {:<w$}  {:<4}  {:<17}  {}\n",
            s.kind, s.site, s.old_tag, s.new_tag, s.immediate
        ));
    }
    for n in &r.notes {
        o.push_str(&format!("note: {n}\n"));
    }
    o.push_str(&format!(
        "\nLet the system run, then count per site:\n  pooldump analyze --kdnet {} --relabel {map}\n  pooldump find --kdnet {} --relabel {map}\nand put the code back:\n  pooldump relabel --kdnet {} --undo {map}\n",
        args.kdnet, args.kdnet, args.kdnet
    ));
    o
}
