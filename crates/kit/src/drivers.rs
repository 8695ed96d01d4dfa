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

/// Every synthetic driver, in load order.
pub fn all() -> &'static [Driver] {
    static ALL: OnceLock<Vec<Driver>> = OnceLock::new();
    ALL.get_or_init(|| {
        let f: DriversFile =
            serde_json::from_str(JSON).expect("testdata/drivers/drivers.json parses");
        FILES
            .iter()
            .map(|(name, image, pdb)| {
                let d = f
                    .drivers
                    .iter()
                    .find(|d| d.file == format!("{name}.sys"))
                    .unwrap_or_else(|| panic!("drivers.json lacks {name}.sys"));
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
                    },
                    image,
                    pdb,
                }
            })
            .collect()
    })
}
