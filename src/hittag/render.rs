//! `pooldump hittag`'s text: the call sites, each with how its kind was
//! decided and its stacks as WinDbg's `k` prints them, then the session's
//! figures and notes.

use super::*;

fn kind_of(s: &SiteRow) -> &'static str {
    match (s.allocs > 0, s.frees > 0) {
        (true, true) => "alloc+free",
        (true, false) => "alloc",
        _ => "free",
    }
}

/// One call site: how its kind was decided, and its first `stacks`
/// distinct stacks as WinDbg's `k` prints them.
fn render_site(o: &mut String, s: &SiteRow, stacks: usize) {
    let by: Vec<String> = s
        .decided_by
        .iter()
        .map(|d| match d {
            DecidedBy::NtFrame { function } => format!("nt!{function} on the stack"),
            DecidedBy::Import { function } => format!("calls {function}"),
        })
        .collect();
    let through = s
        .through
        .as_ref()
        .map_or_else(String::new, |t| format!(", through KMDF's {t}"));
    o.push_str(&format!(
        "\n{}: {} allocations, {} frees ({}{through}); {} distinct stack(s)\n",
        s.site,
        s.allocs,
        s.frees,
        by.join(", "),
        s.stacks.len()
    ));
    for st in s.stacks.iter().take(stacks) {
        o.push_str(&format!(
            "  {} time(s):\n   # Child-SP          RetAddr           Call Site\n",
            st.count
        ));
        for (i, f) in st.frames.iter().enumerate() {
            o.push_str(&format!(
                "  {:02} {} {} {}\n",
                i,
                f.child_sp,
                f.ret_addr
                    .map_or_else(|| "????????`????????".into(), |a| a.to_string()),
                f.call_site
            ));
        }
    }
    if s.stacks.len() > stacks {
        o.push_str(&format!(
            "  ({} more distinct stacks in --json)\n",
            s.stacks.len() - stacks
        ));
    }
}

pub(super) fn render(r: &Report, stacks: usize) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "{} (build {}): tag {} via nt!PoolHitTag at {}\n",
        r.target, r.build, r.tag, r.pool_hit_tag
    ));
    let why = match r.ended {
        Ended::Hits => "the hit count was reached",
        Ended::Time => "the time limit was reached",
        Ended::Interrupted => "interrupted",
        Ended::LinkLost => "the link failed",
    };
    o.push_str(&format!(
        "{} pool hits in {:.1} s ({} allocations, {} frees), {} other stops; {why}. nt!PoolHitTag restored to {} and the target resumed.\n",
        r.allocs + r.frees,
        r.seconds,
        r.allocs,
        r.frees,
        r.other_stops,
        r.previous_value
    ));
    for n in &r.notes {
        o.push_str(&format!("note: {n}\n"));
    }
    if r.table.sites.is_empty() {
        return o;
    }
    let w = crate::render::widest(r.table.sites.iter().map(|s| s.site.as_str()), 9);
    o.push_str(&format!(
        "\n {:<w$}  {:<10}  {:>6}  {:>6}  {:>15}  {:>6}\n",
        "Call site", "Kind", "Allocs", "Frees", "Bytes requested", "Stacks"
    ));
    for s in &r.table.sites {
        let bytes = if s.allocs == 0 {
            "-".to_string()
        } else if s.unknown_sizes > 0 {
            format!("{}+?", s.bytes_requested)
        } else {
            s.bytes_requested.to_string()
        };
        o.push_str(&format!(
            " {:<w$}  {:<10}  {:>6}  {:>6}  {:>15}  {:>6}\n",
            s.site,
            kind_of(s),
            s.allocs,
            s.frees,
            bytes,
            s.stacks.len()
        ));
    }
    for s in &r.table.sites {
        render_site(&mut o, s, stacks);
    }
    if !r.table.other.is_empty() {
        o.push_str("\nOther stops (not counted, resumed):\n");
        for x in &r.table.other {
            o.push_str(&format!("  {:>4}  {}: {}\n", x.count, x.at, x.reason));
        }
    }
    if !r.prints.is_empty() {
        o.push_str("\nDbgPrint output while collecting:\n");
        for p in &r.prints {
            o.push_str(&format!("  {p}\n"));
        }
    }
    o
}
