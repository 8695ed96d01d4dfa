//! One line of PoolMon's or `!poolused`'s output: the header that says
//! where the columns are, and the rows under it.

use super::*;

/// Character positions of whitespace-separated words: (start, end, word).
fn words(line: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    for (ci, (bi, c)) in chars.iter().enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some((ci, *bi)),
            (true, Some((s, sb))) => {
                out.push((s, ci, &line[sb..*bi]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some((s, sb)) = start {
        out.push((s, chars.len(), &line[sb..]));
    }
    out
}

pub(super) fn header(line: &str, legacy: bool, session: bool) -> Option<Layout> {
    let w = words(line);
    let names: Vec<&str> = w.iter().map(|x| x.2).collect();
    let tag = w.iter().position(|x| x.2 == "Tag")?;
    // Only a Markdown heading or quote mark may come before `Tag` (`##
    // Tag Type ...` in a copy of a web page).
    if !w[..tag]
        .iter()
        .all(|x| x.2.chars().all(|c| matches!(c, '#' | '>')))
    {
        return None;
    }
    let has = |s: &str| names.contains(&s);
    let tag_col = w[tag].0;
    if has("Type") && has("Allocs") && has("Frees") && has("Diff") && has("Bytes") {
        // The display has a `( )` change column after Allocs, Frees and
        // Bytes in its rows, not in its header: told apart per row.
        return Some(Layout {
            format: TextFormat::PoolmonLog,
            tag_col,
            num_ends: Vec::new(),
            session,
        });
    }
    if has("Allocs") && has("Used") && !has("Type") {
        let verbose = has("Frees") && has("Diff");
        let num_ends: Vec<usize> = w
            .iter()
            .filter(|x| matches!(x.2, "Allocs" | "Frees" | "Diff" | "Used"))
            .map(|x| x.1)
            .collect();
        let want = if verbose { 8 } else { 4 };
        if num_ends.len() != want {
            return None;
        }
        let format = match (legacy, verbose) {
            (false, false) => TextFormat::PoolusedSummary,
            (false, true) => TextFormat::PoolusedVerbose,
            (true, false) => TextFormat::PoolusedLegacy,
            (true, true) => TextFormat::PoolusedLegacyVerbose,
        };
        return Some(Layout {
            format,
            tag_col,
            num_ends,
            session,
        });
    }
    None
}

/// A line that is not a header (`header` said no) but has `Tag` and
/// `Allocs` among its words: a header run together with other lines (a
/// copy that lost its line breaks), or one whose columns are of no known
/// layout. Named when a file has no header at all.
pub(super) fn near_miss(line: &str, line_no: usize) -> Option<TextProblem> {
    let w = words(line);
    let tag = w.iter().position(|x| x.2 == "Tag")?;
    if !w.iter().any(|x| x.2 == "Allocs") {
        return None;
    }
    let why = if tag > 0 {
        "does not start with `Tag` (a header is a line of its own: were the line breaks lost?)"
    } else {
        "its columns are neither PoolMon's (Type Allocs Frees Diff Bytes) nor !poolused's (Allocs and Used for each pool)"
    };
    Some(TextProblem {
        line: line_no,
        text: line.to_string(),
        why: why.into(),
    })
}

pub(super) fn is_prompt(t: &str) -> bool {
    // `0: kd> !poolused 2`, `lkd> ...`, `: kd> ...` (an excerpt).
    let head = t.split("kd>").next().unwrap_or("");
    t.contains("kd>")
        && head
            .trim_end_matches('l')
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == ' ')
}

/// Lines of PoolMon's and WinDbg's output that carry no row.
pub(super) fn known_line(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    is_prompt(t)
        // Progress dots, elided rows (`...`), and rule lines under a
        // header (`-----` in some published PoolMon screens).
        || t.chars().all(|c| matches!(c, '.' | ' ' | '-' | '='))
        || lower.starts_with("memory:")
        || lower.starts_with("commit:")
        || lower.ends_with("pool information")
        || lower.starts_with("sorting by")
        || lower.starts_with("using a machine size of")
        || lower.starts_with("pool used")
        || t.split_whitespace()
            .all(|w| matches!(w, "NonPaged" | "Paged" | "Nonpaged"))
        || kd_cache_line(&lower)
}

/// The kd cache report WinDbg prints when `!poolused` grows the cache
/// (`*** CacheSize too low - increasing to 81 MB`, `Max cache size is :
/// ...`, `counts: ... cached/... uncached`, `** Transition PTEs are
/// implicitly decoded`); `lower` is the trimmed line in lower case.
fn kd_cache_line(lower: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "*** cachesize too low",
        "max cache size is",
        "total memory in cache",
        "number of regions cached",
    ];
    PREFIXES.iter().any(|p| lower.starts_with(p))
        || (lower.contains("full reads broken into") && lower.ends_with("partial reads"))
        || ((lower.starts_with("counts:") || lower.starts_with("bytes :"))
            && lower.contains("uncached"))
        || (lower.starts_with("** ") && lower.ends_with("implicitly decoded"))
}

/// PoolMon's Type column.
fn pool_type(w: &str) -> Option<PoolClass> {
    match w {
        "Nonp" | "NonP" | "Nonpaged" | "NonPaged" => Some(PoolClass::NonPaged),
        "Paged" => Some(PoolClass::Paged),
        _ => None,
    }
}

/// What follows the tag in a PoolMon row or `Total` line: the pool, the
/// five numbers (Allocs, Frees, Diff, Bytes, Per Alloc), whether `( n)`
/// change columns were there, and the text after the numbers.
struct PoolmonCounts {
    pool: PoolClass,
    nums: [u64; 5],
    changes: bool,
    after: String,
}

/// Type, then Allocs [(n)] Frees [(n)] Diff Bytes [(n)] Per-Alloc.
fn poolmon_counts(rest: &str) -> Result<PoolmonCounts, String> {
    let w = words(rest);
    let mut it = w.iter();
    let ty = it.next().ok_or("no Type column")?;
    let pool =
        pool_type(ty.2).ok_or_else(|| format!("Type `{}` is neither Nonp nor Paged", ty.2))?;
    let mut nums = [0u64; 5];
    let mut got = 0;
    let mut changes = false;
    let mut end = ty.1;
    while got < nums.len() {
        let x = it.next().ok_or("fewer than five numbers")?;
        // A `( n)` change column: `(`, `n)` or `(n)`.
        if x.2.starts_with('(') {
            changes = true;
            let mut y = *x;
            while !y.2.ends_with(')') {
                y = *it.next().ok_or("an unclosed `(`")?;
            }
            end = y.1;
            continue;
        }
        nums[got] =
            x.2.parse::<u64>()
                .map_err(|_| format!("`{}` is not a count", x.2))?;
        got += 1;
        end = x.1;
    }
    // A trailing change column after Per Alloc is not PoolMon's, but
    // Bytes' change column comes before it and was consumed above.
    Ok(PoolmonCounts {
        pool,
        nums,
        changes,
        after: rest.chars().skip(end).collect(),
    })
}

/// The tag of a PoolMon row and the text after it. Where the columns line
/// up, the tag is the four characters under `Tag` (tags have spaces:
/// `Dh 1`). Where they do not, it is the text from the row's first
/// character to the Type word, space-padded to four as PoolMon prints it:
/// a copy whose spacing was collapsed (`Io Nonp 1021112 ( 1) ...`), rows
/// indented less than their header (`Strg  Paged` one column left of
/// ` Tag`), a header shifted by a Markdown heading mark (`## Tag`). The
/// four characters are not the tag when they start inside a word, are
/// blank, or run into the next word.
fn poolmon_tag(chars: &[char], tag_col: usize) -> Result<(String, String), String> {
    let fixed: String = chars[tag_col..tag_col + 4].iter().collect();
    let rest: String = chars[tag_col + 4..].iter().collect();
    let starts_word = tag_col == 0 || chars[tag_col - 1].is_whitespace();
    if starts_word && !fixed.trim().is_empty() && rest.starts_with(char::is_whitespace) {
        return Ok((fixed, rest));
    }
    let start = chars.iter().position(|c| !c.is_whitespace()).unwrap_or(0);
    let from: String = chars[start..].iter().collect();
    let short = words(&from)
        .into_iter()
        .find(|x| x.0 > 0 && pool_type(x.2).is_some())
        .map(|x| x.0)
        .and_then(|ty| {
            let tag: String = chars[start..start + ty].iter().collect();
            let tag = tag.trim_end();
            (tag.chars().count() <= 4)
                .then(|| (format!("{tag:<4}"), from.chars().skip(ty).collect()))
        });
    short.ok_or_else(|| "no tag of at most four characters before the Type column".into())
}

/// A PoolMon row: tag, type, then Allocs [(n)] Frees [(n)] Diff Bytes
/// [(n)] Per-Alloc, then the Mapped_Driver text.
pub(super) fn poolmon_row(line: &str, l: &Layout) -> Result<(SnapshotRow, bool), String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() < l.tag_col + 5 {
        return Err("too short for a PoolMon row".into());
    }
    let (tag_text, rest) = poolmon_tag(&chars, l.tag_col)?;
    let c = poolmon_counts(&rest)?;
    let [allocs, frees, diff, bytes, _per] = c.nums;
    let tag = PoolTag::from_bytes(tag_bytes(&tag_text)?);
    let row = SnapshotRow {
        tag_text: tag.to_string(),
        tag,
        pool: c.pool,
        allocs,
        frees,
        diff,
        bytes,
        overflow: false,
        driver: poolmon_driver(c.after.trim()),
    };
    Ok((row, c.changes))
}

/// PoolMon's totals (its `e` key or `/e`): `Total  Nonp` and `Total Paged`
/// lines under the rows, printed from column 0 with the row's columns
/// (poolmon.c). `None` when the line is not one; the pool and its counters
/// otherwise.
pub(super) fn poolmon_total(line: &str) -> Option<Result<(PoolClass, PoolCounters), String>> {
    let rest = line.trim_start().strip_prefix("Total")?;
    let first = rest.split_whitespace().next()?;
    if !rest.starts_with(char::is_whitespace) || pool_type(first).is_none() {
        return None;
    }
    Some(poolmon_counts(rest).map(|c| {
        let [allocs, frees, diff, bytes, _per] = c.nums;
        let counters = PoolCounters {
            allocs,
            frees,
            diff,
            bytes,
        };
        (c.pool, counters)
    }))
}

fn tag_bytes(s: &str) -> Result<[u8; 4], String> {
    let b = s.as_bytes();
    if b.len() != 4 {
        return Err(format!("tag `{s}` is not four bytes"));
    }
    Ok([b[0], b[1], b[2], b[3]])
}

/// `[ntfs.sys - AttrSup.c]`, `[ipsec][ipsec.sys - timers]`, `[nt!ps -
/// Thread objects]`, `Unknown Driver`. A group with no ` - ` that is not a
/// binary's name is a pooltag.txt description with no binary (`[Gdi
/// Objects]`, `[Font related stuff]` in session pool screens): no driver.
fn poolmon_driver(t: &str) -> Option<String> {
    if t.is_empty() || t.eq_ignore_ascii_case("unknown driver") {
        return None;
    }
    let groups: Vec<&str> = t
        .split('[')
        .filter_map(|g| g.split(']').next())
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let pick = groups
        .iter()
        .find(|g| g.contains(" - "))
        .or(groups.first())
        .copied()
        .unwrap_or(t);
    if !pick.contains(" - ") && !crate::pool::pooltag::looks_like_binary(pick) {
        return None;
    }
    let name = pick.split(" - ").next().unwrap_or(pick).trim();
    (!name.is_empty() && !name.eq_ignore_ascii_case("<unknown>")).then(|| name.to_string())
}

/// The numbers of a `!poolused` row (`rest` starts at column `after`,
/// past the tag), one per numeric header word, and where the description
/// starts in `rest`.
fn poolused_numbers(rest: &str, l: &Layout, after: usize) -> Result<(Vec<u64>, usize), String> {
    let w = words(rest);
    let n = l.num_ends.len();
    let mut nums = Vec::with_capacity(n);
    let mut desc_from = rest.chars().count();
    for i in 0..n {
        let x = w.get(i).ok_or_else(|| format!("fewer than {n} numbers"))?;
        let digits: String = x.2.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(format!("`{}` is not a count", x.2));
        }
        let mut len = digits.chars().count();
        if i + 1 < n {
            if len != x.2.chars().count() {
                return Err(format!("`{}` is not a count", x.2));
            }
        } else {
            // The last number may be glued to the description (legacy
            // layout): where the columns line up (every number before it
            // ends under its header word, as WinDbg right-aligns them),
            // it ends under its header word too. Only when a description
            // follows: a number that ends the line (the TOTAL row,
            // `13066104` past its column) is whole. In a copy whose
            // spacing was collapsed the glued digits are all read.
            let col_end = l.num_ends[i] as isize - after as isize;
            let described = len < x.2.chars().count() || w.len() > n;
            let aligned = w[..i]
                .iter()
                .zip(&l.num_ends)
                .all(|(x, e)| x.1 + after == *e);
            if described && aligned && col_end > x.0 as isize && (col_end as usize) < x.0 + len {
                len = col_end as usize - x.0;
            }
            desc_from = x.0 + len;
        }
        let v = digits[..len]
            .parse::<u64>()
            .map_err(|_| format!("`{}` is out of range", x.2))?;
        nums.push(v);
    }
    Ok((nums, desc_from))
}

/// One pool's counters from its `!poolused` columns: Allocs, Frees, Diff
/// and Bytes with `verbose` (`!poolused 1`), else outstanding allocations
/// and bytes (Allocs is Diff; Allocs and Frees themselves are not printed).
fn poolused_counters(s: &[u64], verbose: bool) -> PoolCounters {
    if verbose {
        PoolCounters {
            allocs: s[0],
            frees: s[1],
            diff: s[2],
            bytes: s[3],
        }
    } else {
        PoolCounters {
            allocs: s[0],
            frees: 0,
            diff: s[0],
            bytes: s[1],
        }
    }
}

/// A `!poolused` row (one or two snapshot rows: nonpaged and paged), or
/// its TOTAL row.
pub(super) fn poolused_row(
    line: &str,
    l: &Layout,
    table: &mut TextTable,
) -> Result<Vec<SnapshotRow>, String> {
    let chars: Vec<char> = line.chars().collect();
    let trimmed = line.trim_start();
    let is_total = trimmed.starts_with("TOTAL");
    let (tag_text, after) = if is_total {
        let skip = chars.len() - trimmed.chars().count() + 5;
        (String::new(), skip)
    } else {
        if chars.len() < l.tag_col + 5 {
            return Err("too short for a !poolused row".into());
        }
        (
            chars[l.tag_col..l.tag_col + 4].iter().collect::<String>(),
            l.tag_col + 4,
        )
    };
    let rest: String = chars[after..].iter().collect();
    let (nums, desc_from) = poolused_numbers(&rest, l, after)?;
    let n = nums.len();
    let desc: String = rest.chars().skip(desc_from).collect();
    let driver = desc
        .rsplit_once(", Binary:")
        .map(|(_, b)| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.eq_ignore_ascii_case("<unknown>"));
    let counters = |s: &[u64]| poolused_counters(s, n == 8);
    let half = n / 2;
    let np = counters(&nums[..half]);
    let pg = counters(&nums[half..]);
    if is_total {
        table.total = Some((np, pg));
        return Ok(Vec::new());
    }
    let tag = PoolTag::from_bytes(tag_bytes(&tag_text)?);
    Ok([(PoolClass::NonPaged, np), (PoolClass::Paged, pg)]
        .into_iter()
        .filter(|(_, c)| c.allocs != 0 || c.frees != 0 || c.bytes != 0)
        .map(|(pool, c)| SnapshotRow {
            tag_text: tag.to_string(),
            tag,
            pool,
            allocs: c.allocs,
            frees: c.frees,
            diff: c.diff,
            bytes: c.bytes,
            overflow: false,
            driver: driver.clone(),
        })
        .collect())
}
