//! Taking a snapshot: the tracker table, the kernel's identity and its
//! clocks (KUSER_SHARED_DATA), from a dump or a live target.

use super::*;

// ---------------------------------------------------------------------------
// Taking a snapshot

/// What the caller knows about the source.
#[derive(Debug, Clone)]
pub struct CaptureContext {
    /// The source's kind and name, as the snapshot records them.
    pub source: SourceInfo,
    /// The build number the source reported (dump header, GetVersion).
    pub build: u32,
    /// Clocks the source carries itself (a dump header), used when
    /// KUSER_SHARED_DATA cannot be read.
    pub header_clock: Option<(FileTime, UpTime)>,
}

/// How to read the rows.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions<'a> {
    /// How the tracker table is read.
    pub tracker: TrackerOptions,
    /// pooltag.txt for the driver column.
    pub pooltag: Option<&'a PoolTagDb>,
    /// Search the loaded images for tags pooltag.txt lacks.
    pub search_images: bool,
}

impl<M: Memory> Target<M> {
    /// A PoolMon snapshot of this kernel, for diff and trend: the tracker
    /// table with each row's driver, nt's identity and the machine's
    /// clocks. The kernel must not be running (a dump, or a live target
    /// stopped in the debugger).
    pub fn snapshot(
        &self,
        ctx: &CaptureContext,
        opts: &CaptureOptions<'_>,
    ) -> Result<Snapshot, SnapshotError> {
        let usage = self
            .pool_usage(&opts.tracker)
            .map_err(|error| SnapshotError::Pool {
                input: ctx.source.name.clone(),
                error,
            })?;
        let mut usage_rows = usage.rows.clone();
        self.attribute(&mut usage_rows, opts.pooltag, opts.search_images);
        let mut rows: Vec<SnapshotRow> = usage_rows.iter().map(SnapshotRow::from_usage).collect();
        rows.sort_by_key(|r| (r.tag.bytes(), r.pool, r.overflow));

        let mut warnings = usage.warnings.clone();
        let kuser = read_kuser(&self.mem, &self.symbols);
        let (system, uptime, clock_source) = match (&kuser, ctx.header_clock) {
            (Ok(k), _) => (
                Some(k.system_time),
                Some(k.interrupt_time),
                Some(ClockSource::KuserSharedData),
            ),
            (Err(_), Some((st, up))) => (Some(st.0), Some(up.0), Some(ClockSource::DumpHeader)),
            (Err(e), None) => {
                warnings.push(Warning::new(
                    WarningKind::Snapshot,
                    format!(
                        "the machine's clocks are unknown ({e}); trends over these snapshots use the host's clock"
                    ),
                ));
                (None, None, None)
            }
        };
        let cv = self.kernel.image.codeview.as_ref();
        Ok(Snapshot {
            schema: SCHEMA.into(),
            source: ctx.source.clone(),
            kernel: KernelInfo {
                build: ctx.build,
                kern_base: self.kern_base(),
                pdb: cv.map(|c| format!("{} {}", c.pdb_name, c.store_key)),
                processors: usage.tracker.processors,
                physical_pages: kuser.as_ref().ok().and_then(|k| k.physical_pages),
            },
            time: TimeInfo {
                system_time_filetime: system,
                system_time: system.and_then(|t| FileTime(t).rfc3339()),
                uptime_100ns: uptime,
                uptime: uptime.map(|u| UpTime(u).to_string()),
                clock_source,
                taken_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs()),
            },
            totals: SnapshotTotals {
                nonpaged: usage.totals.nonpaged.into(),
                paged: usage.totals.paged.into(),
                tags: usage.totals.tags,
            },
            rows,
            warnings,
            diff_only: false,
        })
    }
}

/// What KUSER_SHARED_DATA says.
#[derive(Debug, Clone, Copy)]
struct KuserClocks {
    interrupt_time: u64,
    system_time: u64,
    physical_pages: Option<u64>,
}

/// Read InterruptTime and SystemTime. Each is a KSYSTEM_TIME that the
/// clock interrupt updates as High2Time, LowPart, High1Time, so a reader
/// that sees High1Time == High2Time has a consistent value; a dump taken
/// mid-update fails that check and the caller falls back to the header.
fn read_kuser<M: Memory + ?Sized>(
    mem: &M,
    syms: &crate::symbols::KernelSymbols,
) -> Result<KuserClocks, String> {
    const T: &str = "_KUSER_SHARED_DATA";
    let size = syms
        .type_size(T)
        .ok_or("the symbols lack _KUSER_SHARED_DATA")?;
    // Bounded by the page the structure lives in, whatever the symbols say.
    let size = size.min(crate::addr::PAGE_SIZE) as usize;
    let mut page = vec![0u8; size];
    mem.read_virtual(KUSER_SHARED_DATA, &mut page)
        .map_err(|e| format!("KUSER_SHARED_DATA at {KUSER_SHARED_DATA}: {e}"))?;
    let ksystem_time = |name: &str| -> Result<u64, String> {
        let f = |part: &str| {
            syms.field(T, &format!("{name}.{part}"))
                .map_err(|e| e.to_string())?
                .read_u64(&page)
                .ok_or_else(|| format!("{T}.{name}.{part} lies outside the structure"))
        };
        let (low, h1, h2) = (f("LowPart")?, f("High1Time")?, f("High2Time")?);
        if h1 != h2 {
            return Err(format!(
                "{T}.{name} was caught mid-update (High1Time {h1:#x}, High2Time {h2:#x})"
            ));
        }
        Ok((h1 << 32) | (low & 0xFFFF_FFFF))
    };
    let interrupt_time = ksystem_time("InterruptTime")?;
    let system_time = ksystem_time("SystemTime")?;
    if interrupt_time == 0 || system_time == 0 {
        return Err("KUSER_SHARED_DATA's clocks are zero".into());
    }
    let physical_pages = syms
        .field(T, "NumberOfPhysicalPages")
        .ok()
        .and_then(|f| f.read_u64(&page));
    Ok(KuserClocks {
        interrupt_time,
        system_time,
        physical_pages,
    })
}
