#!/usr/bin/env python3
"""Generate pooldump's built-in layout table (table.json.xz) from real
symbol tables.

The table is the offline fallback of crates/symbols/src/fallback.rs:
when no PDB or ISF can be had for a dump's kernel, pooldump uses these
layouts, chosen by the RSDS GUID/age (then symbol RVAs are exact too) or
by build number (layouts only), and says so loudly.

Input: the Volatility 3 ISF files (real ntkrnlmp.pdb builds, from
JPCERTCC/Windows-Symbol-Tables, BSD-3-Clause) in ../shared/isf relative to
the repository root, or --isf-dir. Every ISF there becomes one entry.

The entries carry only what the pool analysis reads: the types in TYPES
(all fields, or the listed ones), the enums in ENUMS and the globals in
SYMBOLS, converted exactly as the ISF reader in isf.rs converts them
(crates/core/tests/symbols_isf.rs checks the table against the ISFs field by field).
Array globals whose type an ISF does not give get a size: the gap to the
next symbol, which is how docs/pool-structures.md §1 bounds ExPoolTagTables.

    python3 crates/symbols/src/fallback/generate.py [--isf-dir DIR]

Standard library only. The output is deterministic (sorted JSON, fixed xz
settings).
"""

import argparse
import glob
import json
import lzma
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))

# Type name -> None (all fields) or the fields to keep.
TYPES = {
    "_POOL_TRACKER_TABLE": None,
    "_POOL_TRACKER_BIG_PAGES": None,
    "_POOL_HEADER": None,
    "_KLDR_DATA_TABLE_ENTRY": ["InLoadOrderLinks", "DllBase", "EntryPoint", "SizeOfImage",
                               "FullDllName", "BaseDllName", "Flags", "LoadCount"],
    "_LDR_DATA_TABLE_ENTRY": ["InLoadOrderLinks", "DllBase", "EntryPoint", "SizeOfImage",
                              "FullDllName", "BaseDllName", "Flags", "LoadCount"],
    "_LIST_ENTRY": None,
    "_UNICODE_STRING": None,
    "_MI_VISIBLE_STATE": ["SystemVaRegions"],
    "_MI_SYSTEM_VA_ASSIGNMENT": None,
    "_MI_SYSTEM_INFORMATION": ["Vs"],
    "_MM_SESSION_SPACE": ["SessionId", "PagedPoolStart", "PagedPoolEnd", "PoolTags",
                          "PoolTrackTableExpansion", "PoolTrackTableExpansionSize",
                          "PoolTrackBigPages", "PoolTrackBigPagesSize",
                          "PoolBigEntriesInUse"],
    "_KPRCB": ["Number"],
    "_EPROCESS": ["Pcb", "ActiveProcessLinks", "UniqueProcessId", "ImageFileName", "Session"],
    "_KPROCESS": ["DirectoryTableBase"],
    "_RTLP_HP_HEAP_GLOBALS": None,
}
ENUMS = ["_POOL_TYPE", "_MI_ASSIGNED_REGION_TYPES", "_MI_SYSTEM_VA_TYPE"]
SYMBOLS = [
    "PoolTrackTable", "PoolTrackTableSize", "PoolTrackTableMask", "ExPoolTagTables",
    "PoolTrackTableExpansion", "PoolTrackTableExpansionSize", "PoolBigPageTable",
    "PoolBigPageTableSize", "ExpPoolBigEntriesInUse", "ExpBigTableExpansionFailed",
    "PoolHitTag", "ExpPoolFlags", "ExpPoolQuotaCookie", "ExPoolState",
    "RtlpHpHeapGlobals", "ExpSessionPoolTrackTable", "ExpSessionPoolTrackTableSize",
    "ExpSessionPoolTrackTableMask", "ExpHotTagArray", "PoolVector",
    "ExpNumberOfPagedPools", "ExpNumberOfNonPagedPools", "ExpPagedPoolDescriptor",
    "ExpNonPagedPoolDescriptor", "MmNonPagedPoolStart", "MiNonPagedPoolStartAligned",
    "MiNonPagedPoolEnd", "MmPagedPoolEnd", "MmSizeOfPagedPoolInBytes", "MiPagedPoolStart",
    "MmMaximumNonPagedPoolInBytes", "MiState", "MiVisibleState", "KeNumberProcessors",
    "KiProcessorBlock", "KdDebuggerDataBlock", "KdpDataBlockEncoded", "KiWaitNever",
    "KiWaitAlways", "MmSystemRangeStart", "MmPfnDatabase", "PsLoadedModuleList",
    "PsActiveProcessHead", "PsInitialSystemProcess",
]
# Array globals the ISF gives no type for: sized by the gap to the next symbol.
GAP_SIZED = ["ExPoolTagTables", "KiProcessorBlock", "ExpPagedPoolDescriptor",
             "ExpNonPagedPoolDescriptor", "PoolVector", "ExpHotTagArray",
             "KdDebuggerDataBlock"]


def describe(isf, t, depth=0):
    """One ISF type descriptor as isf.rs's FieldLayout (minus name/offset)."""
    if depth > 32:
        raise ValueError("nesting too deep")
    k = t["kind"]
    f = {}
    if k == "base":
        f["size"] = isf["base_types"][t["name"]]["size"]
        f["type"] = t["name"]
    elif k == "pointer":
        f["size"] = isf["base_types"].get("pointer", {"size": 8})["size"]
        f["type"] = "pointer"
        sub = t.get("subtype")
        if sub is not None:
            f["pointee"] = sub.get("name", "") if sub["kind"] in (
                "base", "struct", "union", "class", "enum") else sub["kind"]
    elif k in ("struct", "union", "class"):
        f["size"] = isf["user_types"].get(t["name"], {"size": 0})["size"]
        f["type"] = t["name"]
    elif k == "enum":
        e = isf["enums"][t["name"]]
        f["size"] = isf["base_types"].get(e["base"], {"size": 4})["size"]
        f["type"] = e["base"]
        f["enum"] = t["name"]
    elif k == "bitfield":
        f = describe(isf, t["type"], depth + 1)
        f["bit_position"] = t["bit_position"]
        f["bit_length"] = t["bit_length"]
    elif k == "array":
        sub = t["subtype"]
        e = describe(isf, sub, depth + 1)
        count = t.get("count", 0)
        f["count"] = count
        f["element_size"] = e["size"]
        f["size"] = e["size"] * count
        if sub["kind"] == "array":
            f["type"] = "array"
        else:
            f["type"] = e["type"]
            for key in ("pointee", "enum"):
                if key in e:
                    f[key] = e[key]
    elif k == "function":
        f["size"] = 0
        f["type"] = "function"
    else:
        raise ValueError(f"unknown kind {k}")
    return f


def entry(path):
    with lzma.open(path) if path.endswith(".xz") else open(path, "rb") as fh:
        isf = json.load(fh)
    pdb = isf["metadata"]["windows"]["pdb"]
    types = {}
    for name, keep in TYPES.items():
        ut = isf["user_types"].get(name)
        if ut is None:
            continue
        fields = []
        for fname, fd in ut["fields"].items():
            if keep is not None and fname not in keep:
                continue
            fl = {"name": fname, "offset": fd["offset"]}
            fl.update(describe(isf, fd["type"]))
            fields.append(fl)
        fields.sort(key=lambda x: (x["offset"], x.get("bit_position", 0), x["name"]))
        t = {"size": ut["size"], "fields": fields}
        if ut["kind"] == "union":
            t["union"] = True
        types[name] = t
    enums = {e: isf["enums"][e]["constants"] for e in ENUMS if e in isf["enums"]}
    all_rvas = sorted(s["address"] for s in isf["symbols"].values())
    symbols = {s: isf["symbols"][s]["address"] for s in SYMBOLS if s in isf["symbols"]}
    sizes = {}
    for s in GAP_SIZED:
        if s in symbols:
            later = [r for r in all_rvas if r > symbols[s]]
            if later:
                sizes[s] = later[0] - symbols[s]
    return {
        "pdb": pdb["database"],
        "guid": pdb["GUID"].upper(),
        "age": pdb["age"],
        "layouts": {"symbols": symbols, "symbol_sizes": sizes, "types": types,
                    "enums": enums},
    }


def readme_builds(isf_dir):
    """GUID-age -> (build number, build string) from ../shared/isf/README.md."""
    out = {}
    p = os.path.join(isf_dir, "README.md")
    if not os.path.exists(p):
        return out
    for line in open(p):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and "-" in cells[0] and cells[1].count(".") == 3:
            out[cells[0].upper()] = (int(cells[1].split(".")[2]), cells[1])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--isf-dir", default=os.path.join(REPO, "..", "shared", "isf"))
    ap.add_argument("--out", default=os.path.join(HERE, "table.json.xz"))
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.isf_dir, "*.json.xz")) +
                   glob.glob(os.path.join(a.isf_dir, "*.json")))
    if not files:
        sys.exit(f"no ISF files in {a.isf_dir}")
    builds = readme_builds(a.isf_dir)
    entries = []
    for f in files:
        e = entry(f)
        key = f"{e['guid']}-{e['age']}"
        if key not in builds:
            sys.exit(f"{f}: {key} is not in {a.isf_dir}/README.md, so its build is unknown")
        e["build"], e["build_string"] = builds[key]
        entries.append(e)
    entries.sort(key=lambda e: (e["build"], e["build_string"], e["guid"]))
    doc = {"format": 1,
           "source": "Volatility 3 ISF (JPCERTCC/Windows-Symbol-Tables, BSD-3-Clause)",
           "builds": entries}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with open(a.out, "wb") as fh:
        fh.write(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                               preset=9))
    print(f"{a.out}: {len(entries)} builds, {len(data)} bytes of JSON, "
          f"{os.path.getsize(a.out)} bytes compressed")
    for e in entries:
        print(f"  {e['build_string']:<18} {e['guid']}-{e['age']}  "
              f"{len(e['layouts']['types'])} types, {len(e['layouts']['symbols'])} symbols")


if __name__ == "__main__":
    main()
