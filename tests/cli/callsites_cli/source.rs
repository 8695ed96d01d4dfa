//! What the drivers' C source plants: every call to a tagged pool routine
//! and its tag literals, and the hand-written assembly's pool calls.

/// (function, kind, tag): what a site is, independent of addresses.
pub(crate) type Planted = (String, String, String);

/// A tag written as a C multi-character literal (`'kaeL'` is `Leak`).
fn literal_tag(lit: &str) -> String {
    lit.chars().rev().collect()
}

/// The pool calls of a driver's C source: per function, each call to a
/// tagged pool routine with each tag literal among its arguments (a `?:`
/// gives two), and in the `__asm__` blocks each `mov r8d/edx, imm` followed
/// by a call through `__imp_` of a pool routine.
pub(crate) fn planted_in_source(c: &str) -> Vec<Planted> {
    let mut out = planted_in_c(c);
    out.extend(planted_in_asm(c));
    out.sort();
    out
}

/// The C functions' pool calls: a definition line at column 0 not ending
/// in `;`, its body up to the next `}` at column 0, and in it each call to
/// a tagged pool routine with its tag literals.
fn planted_in_c(c: &str) -> Vec<Planted> {
    // Comments out (the asm function's pseudo-C lives in one).
    let mut text = String::new();
    let mut rest = c;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        let j = rest[i..].find("*/").map_or(rest.len(), |j| i + j + 2);
        rest = &rest[j..];
    }
    text.push_str(rest);
    let mut out = Vec::new();
    // C functions: a definition line at column 0 not ending in `;`, its
    // body up to the next `}` at column 0.
    let lines: Vec<&str> = text.lines().collect();
    let mut k = 0;
    while k < lines.len() {
        let l = lines[k];
        let is_def = !l.starts_with(' ')
            && !l.starts_with('\t')
            && l.contains('(')
            && !l.trim_end().ends_with(';')
            && !l.starts_with('#')
            && !l.starts_with("__asm__")
            && lines.get(k + 1).is_some_and(|n| n.starts_with('{'));
        if !is_def {
            k += 1;
            continue;
        }
        let l = l.replace("__attribute__((noinline))", "");
        let name = l[..l.find('(').unwrap()]
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .rfind(|w| !w.is_empty())
            .unwrap()
            .to_string();
        let mut body = String::new();
        k += 1;
        while k < lines.len() && !lines[k].starts_with('}') {
            body.push_str(lines[k]);
            body.push('\n');
            k += 1;
        }
        out.extend(pool_calls(&name, &body));
    }
    out
}

/// The calls of function `name`'s `body` to a tagged pool routine, one per
/// tag literal among its arguments (a `?:` gives two); a tag passed in a
/// variable is the literals the variable is set from.
fn pool_calls(name: &str, body: &str) -> Vec<Planted> {
    let mut out = Vec::new();
    for routine in [
        "ExAllocatePoolWithQuotaTag",
        "ExAllocatePoolWithTag",
        "ExFreePoolWithTag",
    ] {
        let kind = if routine.starts_with("ExFree") {
            "free"
        } else {
            "alloc"
        };
        let mut from = 0;
        while let Some(i) = body[from..].find(&format!("{routine}(")) {
            let start = from + i + routine.len() + 1;
            let end = start + body[start..].find(");").unwrap();
            let args = &body[start..end];
            let mut lits: Vec<&str> = args.split('\'').skip(1).step_by(2).collect();
            if lits.is_empty() {
                // The tag is a variable: the literals it is set from.
                let var = args.rsplit(',').next().unwrap().trim();
                let def = body
                    .find(&format!("{var} = "))
                    .unwrap_or_else(|| panic!("{name}: where is {var} set?"));
                let stmt = &body[def..def + body[def..].find(';').unwrap()];
                lits = stmt.split('\'').skip(1).step_by(2).collect();
            }
            for lit in lits {
                out.push((name.to_string(), kind.to_string(), literal_tag(lit)));
            }
            from = end;
        }
    }
    out
}

/// The hand-written assembly's pool calls: labels name functions
/// (`X$part` is X's); a tag is the last `mov r8d`/`mov edx` immediate
/// before a call through `__imp_`.
fn planted_in_asm(c: &str) -> Vec<Planted> {
    let mut out = Vec::new();
    let mut func = String::new();
    let (mut r8, mut edx): (Option<String>, Option<String>) = (None, None);
    let tag_of = |v: &str| {
        let v = u32::from_str_radix(v, 16).unwrap();
        String::from_utf8_lossy(&v.to_le_bytes()).into_owned()
    };
    for raw in c.lines() {
        let l = raw.trim().trim_start_matches('"').trim_end_matches(',');
        let l = l.trim_end_matches('"').trim_end_matches("\\n").trim();
        if let Some(label) = l.strip_suffix(':')
            && !label.contains(' ')
            && !label.starts_with('.')
        {
            func = label.split('$').next().unwrap().to_string();
        }
        if let Some(v) = l.strip_prefix("mov r8d, 0x") {
            r8 = Some(tag_of(v));
        }
        if let Some(v) = l.strip_prefix("mov edx, 0x") {
            edx = Some(tag_of(v));
        }
        if let Some(imp) = l.split("__imp_").nth(1) {
            let r = imp.trim_end_matches(']');
            let (kind, tag) = if r.starts_with("ExFree") {
                ("free", edx.take())
            } else {
                ("alloc", r8.take())
            };
            if let Some(tag) = tag {
                out.push((func.clone(), kind.to_string(), tag));
            }
            (r8, edx) = (None, None);
        }
    }
    out
}
