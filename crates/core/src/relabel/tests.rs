use std::sync::Arc;

use super::*;
use crate::addr::KernelVa;
use crate::callsites::TagSite;
use crate::callsites::{ImageMemory, scan_module, tag_sites};
use crate::hittag::PoolCall;
use crate::pool::PoolTagDb;
use crate::stack::{StackWalker, Symbolizer, SymbolizerOptions};
use crate::tag::PoolTag;

fn t(s: &str) -> PoolTag {
    PoolTag::parse(s).unwrap()
}

/// The tag sites the call-site scan finds in a driver file's image.
fn image_sites(img: &ImageMemory) -> Vec<TagSite> {
    let mut w = StackWalker::from_modules(vec![img.module()]);
    let scan = scan_module(&mut w, img, 0).unwrap();
    let mut sym = Symbolizer::new(SymbolizerOptions::default());
    tag_sites(&[scan], &[], &mut w, &mut sym, img).0
}

fn leakydrv_sites() -> (ImageMemory, Vec<TagSite>) {
    let d = &pooldump_kit::drivers::all()[0];
    let img = ImageMemory::from_bytes(&d.info.file, Arc::from(d.image)).unwrap();
    let sites = image_sites(&img);
    (img, sites)
}

/// leakydrv's `Leak` sites relabelled, with no tag held back.
fn leak_map() -> (ImageMemory, RelabelMap) {
    let (img, sites) = leakydrv_sites();
    let mut c = TagChooser::new([], None);
    let map = plan(t("Leak"), None, &[file_module(&img)], &sites, &mut c).unwrap();
    (img, map)
}

fn file_module(img: &ImageMemory) -> MapModule {
    MapModule {
        name: img.name().into(),
        base: None,
        time_date_stamp: img.image().time_date_stamp(),
        size_of_image: img.image().size_of_image(),
    }
}

#[test]
fn chooser_derives_readable_unused_tags() {
    let db = PoolTagDb::parse("Lea1 - other.sys - someone else's\nLeaA - x.sys - y\n");
    let mut c = TagChooser::new([t("Lea0"), t("Leak")], Some(&db));
    let got: Vec<String> = (0..4)
        .map(|_| c.choose(t("Leak")).unwrap().to_string())
        .collect();
    assert_eq!(got, ["Lea2", "Lea3", "Lea4", "Lea5"]);
    // A tag with spaces keeps them; an unprintable one falls back to `Rl`.
    let mut c = TagChooser::new([], None);
    assert_eq!(c.choose(t("Ab")).unwrap().to_string(), "Ab 0");
    assert_eq!(
        c.choose(PoolTag::from_bytes([1, 2, 3, 4]))
            .unwrap()
            .to_string(),
        "Rl00"
    );
    // The protected bit does not make a taken tag free.
    let mut c = TagChooser::new([PoolTag(t("Lea0").0 | 0x8000_0000)], None);
    assert_eq!(c.choose(t("Leak")).unwrap(), t("Lea1"));
}

#[test]
fn chooser_runs_out_gracefully() {
    let mut c = TagChooser::new([], None);
    let mut n = 0;
    while c.choose(t("Leak")).is_some() {
        n += 1;
        assert!(n < 10_000, "the chooser never ends");
    }
    // 62 `Lea?` candidates less `Leak` itself, 62*62 `Le??` less the 62
    // `Lea?` already tried, 62*62 `Rl??`.
    assert_eq!(n, 61 + (62 * 62 - 62) + 62 * 62);
}

#[test]
fn plan_gives_allocations_fresh_tags_and_frees_zero() {
    let (img, sites) = leakydrv_sites();
    let mut c = TagChooser::new([t("Leak"), t("LkBf")], None);
    let map = plan(t("Leak"), None, &[file_module(&img)], &sites, &mut c).unwrap();
    assert_eq!(map.sites.len(), 5);
    let alloc: Vec<String> = map.alloc_sites().map(|s| s.new_tag.to_string()).collect();
    assert_eq!(alloc, ["Lea0", "Lea1", "Lea2"]);
    for s in &map.sites {
        assert_eq!(s.old_bytes, *b"Leak");
        match s.kind {
            PoolCall::Alloc => assert_eq!(s.new_bytes, s.new_tag.bytes()),
            PoolCall::Free => assert_eq!(s.new_bytes, [0; 4]),
        }
    }
    // JSON round trip, and a map from the future is refused.
    let back = RelabelMap::from_json(map.to_json().as_bytes(), "m").unwrap();
    assert_eq!(back, map);
    let future = map.to_json().replace(SCHEMA, "pooldump.relabel/9");
    assert!(matches!(
        RelabelMap::from_json(future.as_bytes(), "m"),
        Err(RelabelError::Schema { .. })
    ));
    assert!(matches!(
        RelabelMap::from_json(b"{", "m"),
        Err(RelabelError::Json { .. })
    ));
    // No site, only frees, a protected tag: refused.
    assert!(matches!(
        plan(t("Nope"), None, &[file_module(&img)], &sites, &mut c),
        Err(RelabelError::NoSites { .. })
    ));
    let frees: Vec<TagSite> = sites
        .iter()
        .filter(|s| s.kind == PoolCall::Free)
        .cloned()
        .collect();
    assert!(matches!(
        plan(t("Leak"), None, &[file_module(&img)], &frees, &mut c),
        Err(RelabelError::NoAllocSites { .. })
    ));
    let mut prot = sites.clone();
    prot[0].tag = PoolTag(prot[0].tag.0 | 0x8000_0000);
    assert!(matches!(
        plan(prot[0].tag, None, &[file_module(&img)], &prot, &mut c),
        Err(RelabelError::Protected { .. })
    ));
    assert!(matches!(
        plan(t("Leak"), None, &[], &sites, &mut c),
        Err(RelabelError::UnknownModule { .. })
    ));
}

#[test]
fn undo_restores_only_our_bytes() {
    let (img, map) = leak_map();
    let n = map.sites.len();
    let states: Vec<SiteState> = (0..n)
        .map(|i| match i {
            0 => SiteState::Relabelled,
            1 => SiteState::Original,
            2 => SiteState::Foreign { bytes: *b"Xxxx" },
            3 => SiteState::Unreadable {
                error: "paged out".into(),
            },
            _ => SiteState::Relabelled,
        })
        .collect();
    let p = map.undo_plan(&states);
    assert_eq!(
        p.restore.iter().map(|w| w.site).collect::<Vec<_>>(),
        (0..n).filter(|i| *i == 0 || *i >= 4).collect::<Vec<_>>()
    );
    for w in &p.restore {
        assert_eq!(w.expect, map.sites[w.site].new_bytes);
        assert_eq!(w.write, map.sites[w.site].old_bytes);
    }
    assert_eq!(p.already_original, vec![1]);
    assert_eq!(p.refused.len(), 2);
    assert!(p.refused[0].1.contains("58787878"), "{:?}", p.refused);
    // Reading the states from the file itself: all original.
    let loaded = [crate::kernel::LoadedModule {
        entry: KernelVa(0),
        base: img.base(),
        size: img.image().size_of_image(),
        entry_point: KernelVa(0),
        name: img.name().into(),
        full_name: None,
    }];
    assert!(
        map.site_states(&img, &loaded)
            .iter()
            .all(|s| *s == SiteState::Original)
    );
    // Writes are the reverse of the undo.
    for w in map.writes() {
        assert_eq!(w.expect, map.sites[w.site].old_bytes);
    }
}

#[test]
fn a_patched_file_carries_the_new_tags_and_a_correct_checksum() {
    let d = &pooldump_kit::drivers::all()[0];
    let (_, map) = leak_map();
    let p = patch_image(d.image, &map).unwrap();
    assert_eq!(p.patched, 5);
    assert!(!p.was_signed);
    assert_eq!(pe_checksum(&p.bytes), Some(p.new_checksum));
    assert_ne!(p.new_checksum, 0);
    // Scanning the patched file finds the new tags where the old ones were.
    let img2 = ImageMemory::from_bytes("patched", Arc::from(p.bytes.clone())).unwrap();
    let after = image_sites(&img2);
    for s in map.alloc_sites() {
        assert!(
            after
                .iter()
                .any(|a| a.immediate == s.immediate && a.tag == s.new_tag),
            "{s:?}"
        );
    }
    assert!(!after.iter().any(|a| a.tag == t("Leak")));
    // Patching the patched file is refused: the bytes are not the old ones.
    assert!(matches!(
        patch_image(&p.bytes, &map),
        Err(PatchError::Mismatch { .. })
    ));
    assert!(matches!(
        patch_image(b"not a pe", &map),
        Err(PatchError::NotPe(_))
    ));
}

#[test]
fn checksum_known_answer() {
    // A minimal MZ/PE header: e_lfanew 0x40, PE signature, zeroed rest.
    let mut f = vec![0u8; 0x100];
    f[0] = b'M';
    f[1] = b'Z';
    f[0x3C] = 0x40;
    f[0x40..0x44].copy_from_slice(b"PE\0\0");
    // Words: 0x5A4D, 0x0040, 0x4550 (+ 0 for "\0\0"); the CheckSum field
    // (at 0x40+24+64 = 0x98) counts as zero whatever it holds.
    f[0x98] = 0xFF;
    let words: u32 = 0x5A4D + 0x0040 + 0x4550;
    let folded = (words & 0xFFFF) + (words >> 16);
    assert_eq!(pe_checksum(&f), Some(folded + 0x100));
}

#[test]
fn a_signed_file_is_reported_as_signed() {
    let d = &pooldump_kit::drivers::all()[0];
    let (_, map) = leak_map();
    // IMAGE_DIRECTORY_ENTRY_SECURITY (entry 4 of a PE32+'s directories,
    // at optional header + 112) pointing at a certificate table.
    let mut v = d.image.to_vec();
    let e = u32::from_le_bytes(v[0x3C..0x40].try_into().unwrap()) as usize;
    let dir = e + 24 + 112 + 8 * 4;
    v[dir..dir + 4].copy_from_slice(&0x1000u32.to_le_bytes());
    v[dir + 4..dir + 8].copy_from_slice(&0x200u32.to_le_bytes());
    assert!(patch_image(&v, &map).unwrap().was_signed);
    assert!(!patch_image(d.image, &map).unwrap().was_signed);
}
