//! Getting nt's symbols for a kernel identity (what they then fix in it is
//! [`super::refine`]'s).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::isf::find_isf;
use super::name::PdbName;
use super::pdb::read_pdb;
use super::store::{Attempt, FetchOptions, PdbOrigin, PdbRequest, StoreError, find_pdb};
use super::{
    BuiltInMatch, KernelSymbols, LayoutCache, PdbIdentity, SymbolPath, SymbolSource, fallback,
};
use crate::kernel::{CodeView, KernelIdentity};

/// Where to look for symbols.
pub struct SymbolOptions<'a> {
    /// `_NT_SYMBOL_PATH` elements (directories, stores, servers).
    pub symbol_path: SymbolPath,
    /// A PDB file to use (it must match the image's GUID and age).
    pub pdb_file: Option<PathBuf>,
    /// ISF files (`.json`/`.json.xz`) or directories of them (flat
    /// `<GUID>-<age>.json.xz`, or Volatility's `windows/<pdb>/...` tree).
    pub isf: Vec<PathBuf>,
    /// The layout cache; `None` disables it.
    pub layout_cache: Option<LayoutCache>,
    /// How symbol servers are asked (offline, cache, timeouts).
    pub fetch: FetchOptions<'a>,
    /// Fall back to the built-in table when nothing else has the build.
    pub builtin: bool,
    /// Also consult the built-in table (same GUID only) for types or
    /// symbols the primary source lacks.
    pub builtin_supplement: bool,
}

impl SymbolOptions<'_> {
    /// Only the symbol store or directory `store`: no server, no layout
    /// cache, no built-in table. For tests, benchmarks and a bundled
    /// sample.
    pub fn local_store(store: &Path) -> Self {
        Self {
            symbol_path: SymbolPath::parse(&store.display().to_string(), store),
            pdb_file: None,
            isf: Vec::new(),
            layout_cache: None,
            fetch: FetchOptions {
                offline: true,
                ..FetchOptions::default()
            },
            builtin: false,
            builtin_supplement: false,
        }
    }

    /// `_NT_ALT_SYMBOL_PATH` then `_NT_SYMBOL_PATH` from the environment
    /// (as WinDbg searches them), else
    /// `srv*<cache>/symbols*https://msdl.microsoft.com/download/symbols`;
    /// the layout cache and store under [`super::default_cache_dir`].
    pub fn from_env() -> Self {
        let cache = super::default_cache_dir();
        let store = cache
            .as_ref()
            .map(|c| c.join("symbols"))
            .unwrap_or_else(|| PathBuf::from("symbols"));
        let env: Vec<String> = ["_NT_ALT_SYMBOL_PATH", "_NT_SYMBOL_PATH"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .filter(|s| !s.trim().is_empty())
            .collect();
        let symbol_path = if env.is_empty() {
            SymbolPath::default_with_store(&store)
        } else {
            SymbolPath::parse(&env.join(";"), &store)
        };
        Self {
            symbol_path,
            pdb_file: None,
            isf: Vec::new(),
            layout_cache: cache.map(LayoutCache::new),
            fetch: FetchOptions::default(),
            builtin: true,
            builtin_supplement: true,
        }
    }
}

/// No symbols at all could be had for the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// nt's image has no CodeView record naming its PDB, and the built-in
    /// table cannot stand in.
    #[error(
        "the image has no usable RSDS record, so its PDB is unknown{}",
        builtin.as_ref().map(|b| format!(", and pooldump's built-in layout table cannot stand in: {b}")).unwrap_or_default()
    )]
    NoCodeView {
        /// The build number, when the source states it.
        build: Option<u32>,
        /// Why the built-in table was not used (none when it was disabled).
        builtin: Option<String>,
    },
    /// The PDB name the image records cannot be used as a file name.
    #[error(transparent)]
    BadName(#[from] super::PdbNameError),
    /// The PDB file given (`--pdb`) cannot be used.
    #[error("{}", pdb_file_message(pdb_file, detail))]
    PdbFile {
        /// The file.
        pdb_file: PathBuf,
        /// Why (unreadable, not a PDB, another GUID or age).
        detail: String,
    },
    /// No place on the symbol path, no ISF and no built-in entry has the
    /// PDB.
    #[error("no symbols for {wanted}: {}", describe_attempts(attempts))]
    NotFound {
        /// The PDB wanted (`ntkrnlmp.pdb` with its GUID and age).
        wanted: String,
        /// Every place looked, and what it said.
        attempts: Vec<Attempt>,
    },
    /// A symbol server failed (not a plain "not there"), and nothing else
    /// had the PDB.
    #[error("no symbols for {wanted}: {cause}")]
    Server {
        /// The PDB wanted.
        wanted: String,
        /// The server's failure.
        cause: String,
    },
    /// Nothing had the PDB, and the built-in table's entry with the image's
    /// GUID and age does not fit the image in memory (a forged or patched
    /// RSDS record, or a kernel rebuilt with a real build's GUID).
    #[error(
        "no symbols for {}: {}; and pooldump's built-in layout table, the fallback, cannot stand in: its entry {} has this GUID and age, but {}, so this kernel is not the build the table describes",
        .0.wanted,
        describe_attempts(&.0.tried),
        .0.entry,
        .0.why
    )]
    BuiltInDoesNotFit(Box<BuiltInMisfit>),
}

/// Why the built-in table's entry for an image's GUID and age is not that
/// image's ([`LoadError::BuiltInDoesNotFit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltInMisfit {
    /// The PDB the image names.
    pub wanted: String,
    /// The table entry's build (`10.0.19041.3324`).
    pub entry: String,
    /// What does not fit.
    pub why: String,
    /// Where the PDB was looked for first.
    pub tried: Vec<Attempt>,
}

/// `FILE: what is wrong`, without naming the file twice when the reader's
/// message already starts with it.
fn pdb_file_message(pdb_file: &Path, detail: &str) -> String {
    let shown = pdb_file.display().to_string();
    if detail.starts_with(&shown) {
        detail.to_string()
    } else {
        format!("{shown}: {detail}")
    }
}

fn describe_attempts(a: &[Attempt]) -> String {
    if a.is_empty() {
        return "the symbol path is empty".into();
    }
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl LoadError {
    /// Every place that was tried, for a report.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            LoadError::NotFound { attempts, .. } => attempts,
            LoadError::BuiltInDoesNotFit(m) => &m.tried,
            _ => &[],
        }
    }
}

/// Load nt's symbols for the image whose RSDS record is `cv` (`None` when
/// the image has none); `build` (the dump header's build number) lets the
/// built-in table serve a build whose exact GUID it lacks.
pub fn load_kernel_symbols(
    cv: Option<&CodeView>,
    build: Option<u32>,
    opts: &SymbolOptions<'_>,
) -> Result<KernelSymbols, LoadError> {
    let Some(cv) = cv else {
        return match builtin_by_build(build, opts, Vec::new()) {
            Ok(ks) => Ok(ks),
            Err(builtin) => Err(LoadError::NoCodeView { build, builtin }),
        };
    };
    let name = checked_name(cv)?;
    let wanted = PdbIdentity {
        name: name.to_string(),
        guid: cv.guid,
        age: cv.age,
    };
    let mut warnings = Vec::new();
    let mut attempts = Vec::new();

    // 1. An explicit PDB.
    if let Some(p) = &opts.pdb_file {
        let (source, layouts) = explicit_pdb(p, cv, &name, opts, &mut warnings)?;
        return Ok(finish(wanted, source, layouts, warnings, opts));
    }

    // 2. Explicit ISF files.
    if let Some((path, layouts, w)) = opts
        .isf
        .iter()
        .find_map(|p| find_isf(p, &wanted, &mut attempts))
    {
        warnings.extend(w);
        let source = SymbolSource::Isf { path };
        return Ok(finish(wanted, source, layouts, warnings, opts));
    }
    // ISFs the user named but that could not serve: said, whatever answers
    // instead.
    warnings.extend(
        attempts
            .iter()
            .map(|a| format!("--isf {}: not used: {}", a.location, a.outcome_alone())),
    );

    // 3. The layout cache.
    if let Some(layouts) = cached(opts, &wanted, &mut warnings) {
        let source = SymbolSource::Pdb {
            path: None,
            origin: None,
            layout_cache: opts.layout_cache.as_ref().map(|c| c.path(&wanted)),
            cache_hit: true,
        };
        return Ok(finish(wanted, source, layouts, warnings, opts));
    }

    // 4. The symbol path.
    let req = PdbRequest {
        name: name.clone(),
        guid: cv.guid,
        age: cv.age,
    };
    let server_failure = match from_symbol_path(&req, opts, &mut attempts, &mut warnings) {
        Ok((source, layouts)) => return Ok(finish(wanted, source, layouts, warnings, opts)),
        Err(server_failure) => server_failure,
    };

    // 5. The built-in table.
    builtin_or_error(
        &req,
        build,
        opts,
        wanted,
        warnings,
        attempts,
        server_failure,
    )
}

/// Step 5: the built-in table serves when allowed and it knows the build;
/// otherwise the error says what the symbol server answered, or every
/// place searched.
fn builtin_or_error(
    req: &PdbRequest,
    build: Option<u32>,
    opts: &SymbolOptions<'_>,
    wanted: PdbIdentity,
    warnings: Vec<String>,
    mut attempts: Vec<Attempt>,
    server_failure: Option<ServerFailure>,
) -> Result<KernelSymbols, LoadError> {
    if opts.builtin {
        let builtin = builtin_instead(
            req,
            build,
            opts,
            wanted.clone(),
            warnings,
            &mut attempts,
            server_failure.as_ref(),
        );
        if let Some(ks) = builtin {
            return Ok(ks);
        }
    }
    match server_failure {
        Some(failure) => Err(LoadError::Server {
            wanted: wanted.to_string(),
            cause: failure.message,
        }),
        None => Err(LoadError::NotFound {
            wanted: wanted.to_string(),
            attempts,
        }),
    }
}

/// The PDB the user named (`--pdb`), which must match the image's
/// identity; its layouts are stored in the layout cache when there is one.
fn explicit_pdb(
    p: &Path,
    cv: &CodeView,
    name: &PdbName,
    opts: &SymbolOptions<'_>,
    warnings: &mut Vec<String>,
) -> Result<(SymbolSource, super::Layouts), LoadError> {
    let (id, layouts, w) =
        read_pdb(p, name.as_str(), Some((cv.guid, cv.age))).map_err(|e| LoadError::PdbFile {
            pdb_file: p.to_path_buf(),
            detail: e.to_string(),
        })?;
    warnings.extend(w);
    let cache = store_in_cache(opts, &id, &layouts, warnings);
    let source = SymbolSource::Pdb {
        path: Some(p.to_path_buf()),
        origin: Some(PdbOrigin::Explicit),
        layout_cache: cache,
        cache_hit: false,
    };
    Ok((source, layouts))
}

/// The layouts the layout cache holds for `wanted`, if any; a cache that
/// cannot be read is said and passed over.
fn cached(
    opts: &SymbolOptions<'_>,
    wanted: &PdbIdentity,
    warnings: &mut Vec<String>,
) -> Option<super::Layouts> {
    match opts.layout_cache.as_ref()?.load(wanted) {
        Ok(layouts) => layouts,
        Err(e) => {
            warnings.push(format!("layout cache ignored: {e}"));
            None
        }
    }
}

/// The PDB name the image records, if it is safe as a file name.
fn checked_name(cv: &CodeView) -> Result<PdbName, LoadError> {
    if !cv.name_is_clean {
        return Err(LoadError::BadName(super::PdbNameError {
            shown: cv.pdb_name.clone(),
            why: if cv.name_climbs() {
                "it climbs directories with '..' (no linker records that)"
            } else {
                "it is empty, too long or not printable"
            },
        }));
    }
    Ok(PdbName::from_codeview(&cv.pdb_name)?)
}

/// A symbol server that answered with something other than the file or a
/// 404: the search stopped there.
struct ServerFailure {
    /// The whole error, with every place tried.
    message: String,
    /// The server's URL and what was wrong with its answer.
    attempt: Attempt,
}

/// The PDB along the symbol path, read: its source and layouts. `Err`: not
/// found or not readable (noted in `attempts`), with the server failure
/// that stopped the search, if one did.
fn from_symbol_path(
    req: &PdbRequest,
    opts: &SymbolOptions<'_>,
    attempts: &mut Vec<Attempt>,
    warnings: &mut Vec<String>,
) -> Result<(SymbolSource, super::Layouts), Option<ServerFailure>> {
    let found = match find_pdb(&opts.symbol_path, req, &opts.fetch) {
        Ok(found) => found,
        Err(e) => {
            attempts.extend(e.attempts().iter().cloned());
            let message = e.to_string();
            return Err(match e {
                StoreError::Server { url, detail, .. } => Some(ServerFailure {
                    message,
                    attempt: Attempt {
                        location: url,
                        outcome: detail,
                    },
                }),
                StoreError::NotFound { .. } => None,
            });
        }
    };
    attempts.extend(found.attempts.iter().cloned());
    match read_pdb(&found.path, req.name.as_str(), Some((req.guid, req.age))) {
        Ok((id, layouts, w)) => {
            warnings.extend(w);
            let cache = store_in_cache(opts, &id, &layouts, warnings);
            let source = SymbolSource::Pdb {
                path: Some(found.path.clone()),
                origin: Some(found.origin.clone()),
                layout_cache: cache,
                cache_hit: false,
            };
            Ok((source, layouts))
        }
        Err(e) => {
            attempts.push(Attempt {
                location: found.path.display().to_string(),
                outcome: e.to_string(),
            });
            Err(None)
        }
    }
}

/// The built-in table where no PDB or ISF could serve: the entry with the
/// image's GUID and age, else one for its build number. `None` (noted in
/// `attempts`) when the table cannot stand in.
fn builtin_instead(
    req: &PdbRequest,
    build: Option<u32>,
    opts: &SymbolOptions<'_>,
    wanted: PdbIdentity,
    mut warnings: Vec<String>,
    attempts: &mut Vec<Attempt>,
    server_failure: Option<&ServerFailure>,
) -> Option<KernelSymbols> {
    if let Some(f) = server_failure {
        warnings.push(f.message.clone());
    }
    // What the fallback's user is told was tried: the server's failure
    // too, after the stores before it.
    let mut tried = attempts.clone();
    tried.extend(server_failure.map(|f| f.attempt.clone()));
    if let Some(b) = fallback::by_guid(req.name.as_str(), &req.guid, req.age) {
        warnings.push(format!(
            "NO PDB FOR {wanted}: using pooldump's BUILT-IN layout table for {} (matched by GUID). Only the layouts the pool analysis needs are there; get the PDB for anything else.",
            b.build_string
        ));
        warnings.extend(attempts.iter().map(|a| a.to_string()));
        let source = SymbolSource::BuiltIn {
            matched_by: BuiltInMatch::Guid,
            build: b.build_string.clone(),
            supplement: false,
        };
        let mut ks = KernelSymbols::new(wanted, source, b.layouts.clone());
        ks.warnings = warnings;
        ks.tried = tried;
        return Some(ks);
    }
    match builtin_by_build(build, opts, warnings) {
        Ok(mut ks) => {
            ks.identity = wanted;
            ks.warnings.extend(attempts.iter().map(|a| a.to_string()));
            ks.tried = tried;
            Some(ks)
        }
        Err(why) => {
            attempts.push(Attempt {
                location: BUILTIN_LOCATION.into(),
                outcome: format!(
                    "no entry has this GUID and age{}",
                    why.map(|w| format!(", and {w}")).unwrap_or_default()
                ),
            });
            None
        }
    }
}

/// How attempts name the built-in table.
const BUILTIN_LOCATION: &str = "pooldump's built-in layout table";

/// The built-in table's layouts for a build whose exact GUID it lacks, or
/// why it cannot stand in (`None` when it is disabled or the build is
/// unknown to the source).
fn builtin_by_build(
    build: Option<u32>,
    opts: &SymbolOptions<'_>,
    mut warnings: Vec<String>,
) -> Result<KernelSymbols, Option<String>> {
    if !opts.builtin {
        return Err(None);
    }
    let build = build.ok_or_else(|| Some("the build number is unknown too".to_string()))?;
    let b = fallback::by_build_number_checked(build).map_err(Some)?;
    let id = b
        .identity()
        .ok_or_else(|| Some(format!("its entry {} is malformed", b.build_string)))?;
    let others: Vec<&str> = fallback::builds()
        .iter()
        .filter(|x| x.build == b.build)
        .map(|x| x.build_string.as_str())
        .collect();
    warnings.push(format!(
        "NO PDB: using pooldump's BUILT-IN layout table for {} (matched by build number {} only, not by GUID: its revisions {} have identical layouts, so this revision's are taken to match). Struct layouts only; symbol addresses are NOT known, so anything that needs a global fails until the PDB is found.",
        b.build_string,
        b.build,
        others.join(", ")
    ));
    let mut layouts = b.layouts.clone();
    // Another revision's RVAs would be wrong for this image.
    layouts.symbols.clear();
    layouts.symbol_sizes.clear();
    let source = SymbolSource::BuiltIn {
        matched_by: BuiltInMatch::BuildNumber,
        build: b.build_string.clone(),
        supplement: false,
    };
    let mut ks = KernelSymbols::new(id, source, layouts);
    ks.warnings = warnings;
    Ok(ks)
}

/// Check the built-in table's answers against the image in memory before
/// they are trusted. An entry chosen by GUID and age carries that build's
/// symbol RVAs; a kernel whose RSDS record names a build it is not (a
/// patched or synthetic image) would be read at addresses that mean
/// nothing. The RVAs must fall inside the image (SizeOfImage), and where a
/// KDBG was read, its KdDebuggerDataBlock, PsLoadedModuleList and
/// PsActiveProcessHead must be where the table puts them.
///
/// A primary built-in source that does not fit is an error
/// ([`LoadError::BuiltInDoesNotFit`]); a built-in supplement that does not
/// fit is dropped. Build-number matches carry no RVAs and pass.
pub fn check_builtin_fits(
    syms: &mut KernelSymbols,
    kernel: &KernelIdentity,
) -> Result<(), LoadError> {
    let mut misfit = None;
    for (i, l) in syms.layers().iter().enumerate() {
        if l.source.kind() != super::SourceKind::BuiltIn {
            continue;
        }
        if let Some(why) = builtin_misfit(&l.layouts, kernel) {
            misfit = Some((i, l.source.clone(), why));
            break;
        }
    }
    let Some((i, source, why)) = misfit else {
        return Ok(());
    };
    let entry = match &source {
        SymbolSource::BuiltIn { build, .. } => build.clone(),
        _ => String::new(),
    };
    if i == 0 {
        return Err(LoadError::BuiltInDoesNotFit(Box::new(BuiltInMisfit {
            wanted: syms.identity.to_string(),
            entry,
            why,
            tried: syms.tried.clone(),
        })));
    }
    // A supplement only fills gaps the primary source leaves; one that
    // cannot be this kernel's is not consulted, which changes nothing the
    // user chose, so it is not worth a warning.
    syms.remove_layer(i);
    Ok(())
}

/// Why the table's RVAs cannot be this image's, if they cannot.
fn builtin_misfit(layouts: &super::Layouts, kernel: &KernelIdentity) -> Option<String> {
    let size = u64::from(kernel.image.size_of_image);
    if size > 0
        && let Some((name, rva)) = layouts
            .symbols
            .iter()
            .filter(|(_, r)| **r >= size)
            .max_by_key(|(_, r)| **r)
    {
        return Some(format!(
            "it puts {name} at RVA {rva:#x}, beyond the end of this image (SizeOfImage {size:#x})"
        ));
    }
    let base = kernel.kern_base;
    let kdbg = kernel.kdbg.as_ref()?;
    let at = |name: &str| layouts.symbols.get(name).and_then(|r| base.checked_add(*r));
    let mut checks = vec![
        ("PsLoadedModuleList", kdbg.ps_loaded_module_list),
        ("PsActiveProcessHead", kdbg.ps_active_process_head),
    ];
    if let Some(va) = kdbg.va {
        checks.push(("KdDebuggerDataBlock", va));
    }
    for (name, seen) in checks {
        if seen.0 == 0 {
            continue;
        }
        if let Some(table) = at(name)
            && table != seen
        {
            return Some(format!(
                "it puts {name} at {table}, where this kernel's KDBG says {seen}"
            ));
        }
    }
    None
}

fn finish(
    wanted: PdbIdentity,
    source: SymbolSource,
    layouts: super::Layouts,
    warnings: Vec<String>,
    opts: &SymbolOptions<'_>,
) -> KernelSymbols {
    let mut ks = KernelSymbols::new(wanted, source, layouts);
    ks.warnings = warnings;
    if opts.builtin_supplement
        && let Some(b) = fallback::by_guid(&ks.identity.name, &ks.identity.guid, ks.identity.age)
    {
        ks.push_layer(
            SymbolSource::BuiltIn {
                matched_by: BuiltInMatch::Guid,
                build: b.build_string.clone(),
                supplement: true,
            },
            Arc::new(b.layouts.clone()),
        );
    }
    ks
}

fn store_in_cache(
    opts: &SymbolOptions<'_>,
    id: &PdbIdentity,
    layouts: &super::Layouts,
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    let cache = opts.layout_cache.as_ref()?;
    match cache.store(id, layouts) {
        Ok(p) => Some(p),
        Err(e) => {
            warnings.push(format!(
                "could not write the layout cache under {}: {e}",
                cache.root.display()
            ));
            None
        }
    }
}
