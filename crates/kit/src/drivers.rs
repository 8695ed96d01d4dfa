//! The synthetic drivers (testdata/drivers/): real PE images whose code
//! passes their pool tags as immediate operands, for tag-to-driver
//! attribution.

use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct DriversFile {
    drivers: Vec<DriverJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct DriverJson {
    file: String,
    pdb: crate::layout::PdbInfoLite,
    tags: Vec<TagJson>,
    routine: String,
    functions: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    exports: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    wrapper: bool,
    #[serde(default)]
    framework: bool,
    #[serde(default)]
    data: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    offsets: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    driver_tag: Option<String>,
    #[serde(default)]
    callbacks: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct TagJson {
    tag: String,
    immediate_rvas: Vec<u64>,
}

/// What the kit needs of a driver.
#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub file: String,
    pub pdb: crate::layout::PdbInfoLite,
    pub tags: Vec<String>,
    /// RVAs of the instructions' immediate operands holding each tag.
    pub tag_rvas: Vec<(String, Vec<u64>)>,
    /// The worker routine the simulated target queues work items to.
    pub routine: String,
    pub routine_rva: u64,
    /// Public functions (from the linker's map) and their RVAs.
    pub functions: std::collections::BTreeMap<String, u64>,
    /// Exported routines and their RVAs (ndis.sys's).
    pub exports: std::collections::BTreeMap<String, u64>,
    /// Its exported routines allocate for their caller (NDIS's): the
    /// caller's frame is the call site.
    pub wrapper: bool,
    /// KMDF's framework (Wdf01000.sys): it allocates for the driver that
    /// calls it through its function table, and for its own work with its
    /// client's tag.
    pub framework: bool,
    /// Global variables (from the linker's map) and their RVAs: the
    /// framework's function table and client block, a KMDF driver's
    /// `WdfFunctions_01015` and `WdfDriverGlobals`.
    pub data: std::collections::BTreeMap<String, u64>,
    /// Field offsets the binding writes (the framework's, asserted by its C).
    pub offsets: std::collections::BTreeMap<String, u64>,
    /// A KMDF driver's DriverPoolTag (its tag for PoolTag 0).
    pub driver_tag: Option<String>,
    /// A KMDF driver's callbacks and their RVAs (`evt_io_read`).
    pub callbacks: std::collections::BTreeMap<String, u64>,
}

pub struct Driver {
    pub info: DriverInfo,
    pub image: &'static [u8],
    pub pdb: &'static [u8],
}

macro_rules! drv {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/drivers/",
                $name,
                ".sys"
            )) as &[u8],
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/drivers/",
                $name,
                ".pdb"
            )) as &[u8],
        )
    };
}

const FILES: [(&str, &[u8], &[u8]); 3] = [drv!("leakydrv"), drv!("netsim"), drv!("fsfilt")];
const JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/drivers/drivers.json"
));
const NDIS_FILES: [(&str, &[u8], &[u8]); 2] = [drv!("ndis"), drv!("nicmini")];
const NDIS_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/drivers/ndis.json"
));
const KMDF_FILES: [(&str, &[u8], &[u8]); 2] = [drv!("Wdf01000"), drv!("kmdfdrv")];
const KMDF_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/drivers/kmdf.json"
));

/// The synthetic drivers every machine loads (with
/// [`Scenario::drivers`](crate::Scenario::drivers)), in load order.
pub fn all() -> &'static [Driver] {
    static ALL: OnceLock<Vec<Driver>> = OnceLock::new();
    ALL.get_or_init(|| parse(JSON, "drivers.json", &FILES))
}

/// The network pair a scenario loads on request
/// ([`Scenario::ndis`](crate::Scenario::ndis)), in load order: ndis.sys,
/// whose exported allocator calls nt's pool for its caller, then the
/// miniport nicmini.sys, which imports it.
pub fn ndis_pair() -> &'static [Driver] {
    static PAIR: OnceLock<Vec<Driver>> = OnceLock::new();
    PAIR.get_or_init(|| parse(NDIS_JSON, "ndis.json", &NDIS_FILES))
}

/// The KMDF pair a scenario loads on request
/// ([`Scenario::kmdf`](crate::Scenario::kmdf)), in load order: the
/// framework Wdf01000.sys, then kmdfdrv.sys, bound to it as WDFLDR.SYS
/// binds a KMDF driver (see `Machine::bind_kmdf`).
pub fn kmdf_pair() -> &'static [Driver] {
    static PAIR: OnceLock<Vec<Driver>> = OnceLock::new();
    PAIR.get_or_init(|| parse(KMDF_JSON, "kmdf.json", &KMDF_FILES))
}

fn parse(json: &str, what: &str, files: &[(&str, &'static [u8], &'static [u8])]) -> Vec<Driver> {
    let f: DriversFile = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("testdata/drivers/{what} parses: {e}"));
    files
        .iter()
        .map(|&(name, image, pdb)| {
            let d = f
                .drivers
                .iter()
                .find(|d| d.file == format!("{name}.sys"))
                .unwrap_or_else(|| panic!("{what} lacks {name}.sys"));
            Driver {
                info: DriverInfo {
                    file: d.file.clone(),
                    pdb: d.pdb.clone(),
                    tags: d.tags.iter().map(|t| t.tag.clone()).collect(),
                    tag_rvas: d
                        .tags
                        .iter()
                        .map(|t| (t.tag.clone(), t.immediate_rvas.clone()))
                        .collect(),
                    routine: d.routine.clone(),
                    routine_rva: d.functions[&d.routine],
                    functions: d.functions.clone(),
                    exports: d.exports.clone(),
                    wrapper: d.wrapper,
                    framework: d.framework,
                    data: d.data.clone(),
                    offsets: d.offsets.clone(),
                    driver_tag: d.driver_tag.clone(),
                    callbacks: d.callbacks.clone(),
                },
                image,
                pdb,
            }
        })
        .collect()
}
