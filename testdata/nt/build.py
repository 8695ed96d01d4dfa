#!/usr/bin/env python3
"""Rebuild the synthetic nt images, their PDBs and the test drivers.

For every family in FAMILIES this script reads the real Volatility 3 symbol table (ISF) of that
build of ntkrnlmp.pdb, writes C that reproduces the real layouts of the pool structures
(testdata/nt/<family>/nt.c), compiles and links it with clang-19/lld-link-19 into
ntoskrnl.exe + ntkrnlmp.pdb, gives both files the real build's PDB GUID and age, checks the
result with llvm-pdbutil-19/llvm-readobj-19 against the ISF, and writes layout.json, the
manifest the test kit uses to place data in synthetic dumps. It then builds three small
drivers (testdata/drivers/) that import the pool allocator from ntoskrnl.exe.

Run from the repository root:

    python3 testdata/nt/build.py [--isf-dir ../shared/isf] [--family NAME ...] [--no-drivers]
                                 [--drivers-only]

Requires clang-19, lld-19 and llvm-19 (Debian 12: apt-get install clang-19 lld-19 llvm-19) and
Python 3.11 with the standard library only. The outputs are byte-for-byte reproducible: the
compiler and linker see only relative paths and a fixed pseudo source directory
(FAKE_SRC_ROOT), /Brepro fixes the timestamps, and every generated text is sorted.

See docs/testdata-nt.md for what the files are and how they were verified.
"""

import argparse
import bisect
import contextlib
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DRIVERS_DIR = os.path.join(REPO, "testdata", "drivers")

CLANG = "clang-19"
LLD = "lld-link-19"
PDBUTIL = "llvm-pdbutil-19"
READOBJ = "llvm-readobj-19"
DLLTOOL = "llvm-dlltool-19"

# The compile flags (docs/testdata-nt.md). -gno-codeview-command-line and the fixed
# -fdebug-compilation-dir keep the checkout path and the clang command line out of the PDB.
CFLAGS_COMMON = [
    "--target=x86_64-pc-windows-msvc", "-O1", "-ffreestanding", "-fno-builtin",
    "-fno-stack-protector", "-fasynchronous-unwind-tables",
    "-Werror=implicit-function-declaration", "-Wno-multichar",
]
CFLAGS_DEBUG = ["-gcodeview", "-g", "-fno-eliminate-unused-debug-types",
                "-gno-codeview-command-line"]
CFLAGS_NODEBUG = ["-g0"]
FAKE_SRC_ROOT = "C:\\pooldump\\testdata"


class Family:
    def __init__(self, name, isf, build, build_string, public=False):
        self.name, self.isf, self.build, self.build_string, self.public = (
            name, isf, build, build_string, public)


FAMILIES = [
    Family("win7-7601", "339E74133576439CBCDF7E0229DA3773-1", 7601, "6.1.7601.24540"),
    Family("win81-9600", "22597D0B40394E23936F6A24C6C52D5B-1", 9600, "6.3.9600.19913"),
    Family("win10-14393", "517E128F7B7C4EA79491DE6B9B9CE190-1", 14393, "10.0.14393.4583"),
    Family("win10-17763", "00F31FD82648C8ED1A4426DFFC56A424-1", 17763, "10.0.17763.4644"),
    Family("win10-18362", "35A038B1F6E2E8CAF642111E6EC66F57-1", 18362, "10.0.18362.30"),
    Family("win10-19041", "06564D3477822C7D97F04852CBD5AFD6-1", 19041, "10.0.19041.3324"),
    Family("server2022-20348", "66546C893F1136BF8732FF5773F69265-1", 20348, "10.0.20348.2400"),
    Family("win11-22000", "0CE4A95C0CD782A7596B034D8648E585-1", 22000, "10.0.22000.2538"),
    # An earlier revision of the same build: its own GUID, symbol RVAs and stub layouts (_KPRCB,
    # _KTHREAD, _EPROCESS moved between .318 and .2538; the pool types did not).
    Family("win11-22000-318", "32C1A669D5FFEFD41091F636CFDB6E99-1", 22000, "10.0.22000.318"),
    # Publics only, like Microsoft's public PDBs: full TPI types, S_PUB32, no S_GDATA32.
    Family("win10-19041-public", "3177D31000BA7590DED335936C93E374-1", 19041, "10.0.19041.1415",
           public=True),
]

# Types emitted with their exact real layout, together with every struct or union they contain by
# value (recursively), so nested paths such as _MI_VISIBLE_STATE.SystemVaRegions[i].BaseAddress
# resolve in the PDB. Names absent from a build's ISF are skipped (_KDDEBUGGER_DATA64 and
# _DBGKD_DEBUG_DATA_HEADER64 are in no ISF: Microsoft's public ntkrnlmp.pdb does not carry them).
FULL_TYPES = [
    "_POOL_HEADER", "_POOL_TRACKER_TABLE", "_POOL_TRACKER_BIG_PAGES", "_KLDR_DATA_TABLE_ENTRY",
    "_LIST_ENTRY", "_UNICODE_STRING", "_KDDEBUGGER_DATA64", "_DBGKD_DEBUG_DATA_HEADER64",
    "_DBGKD_GET_VERSION64", "_MI_VISIBLE_STATE", "_MI_SYSTEM_INFORMATION",
    "_EX_POOL_HEAP_MANAGER_STATE", "_SEGMENT_HEAP", "_HEAP_SEG_CONTEXT", "_HEAP_PAGE_SEGMENT",
    "_HEAP_PAGE_RANGE_DESCRIPTOR", "_HEAP_VS_CHUNK_HEADER", "_HEAP_VS_SUBSEGMENT",
    "_HEAP_LFH_SUBSEGMENT", "_RTLP_HP_HEAP_GLOBALS", "_POOL_DESCRIPTOR", "_MM_SESSION_SPACE",
    "_KUSER_SHARED_DATA", "_KSYSTEM_TIME", "_POOL_LIMIT_TABLE_ENTRY",
]
# Only these members of these types pull in their types' full layouts; the other struct-typed
# members are opaque byte arrays of the right size (_MI_SYSTEM_INFORMATION alone would otherwise
# bring in about 110 memory-manager types).
PARTIAL_TYPES = {"_MI_SYSTEM_INFORMATION": {"Vs"}}
# Size-correct stubs: total size and scalar/pointer members at the real offsets. Volatility 3
# binds these names when it loads an nt symbol table.
STUB_TYPES = [
    "_ETHREAD", "_KTHREAD", "_EPROCESS", "_KPROCESS", "_ERESOURCE", "_EX_FAST_REF", "_TOKEN",
    "_OBJECT_HEADER", "_FILE_OBJECT", "_DEVICE_OBJECT", "_CM_KEY_BODY", "_CMHIVE", "_CM_KEY_NODE",
    "_CM_KEY_VALUE", "_HMAP_ENTRY", "_MMVAD_SHORT", "_MMVAD", "_KMUTANT", "_DRIVER_OBJECT",
    "_OBJECT_SYMBOLIC_LINK", "_CONTROL_AREA", "_SHARED_CACHE_MAP", "_VACB", "_IMAGE_DOS_HEADER",
    "_KTIMER", "_LDR_DATA_TABLE_ENTRY", "_KPRCB", "_HANDLE_TABLE",
]
ENUMS = ["_POOL_TYPE", "_MI_ASSIGNED_REGION_TYPES", "_MI_SYSTEM_VA_TYPE"]

# Kernel globals: (name, manifest kind, target type, exported by the real nt).
# kind "pointer"/"pointer_array": target is the struct pointed to (None = void *);
# "struct": target is the struct type of the variable; arrays take their length from the gap to
# the next symbol in the real build (capped at 4096 elements).
GLOBALS = [
    ("PoolTrackTable", "pointer", "_POOL_TRACKER_TABLE", False),
    ("PoolTrackTableSize", "size_t", None, False),
    ("PoolTrackTableMask", "size_t", None, False),
    ("ExPoolTagTables", "pointer_array", "_POOL_TRACKER_TABLE", False),
    ("PoolTrackTableExpansion", "pointer", "_POOL_TRACKER_TABLE", False),
    ("PoolTrackTableExpansionSize", "size_t", None, False),
    ("PoolBigPageTable", "pointer", "_POOL_TRACKER_BIG_PAGES", False),
    ("PoolBigPageTableSize", "size_t", None, False),
    ("ExpPoolBigEntriesInUse", "u32", None, False),
    ("ExpBigTableExpansionFailed", "u32", None, False),
    ("PoolHitTag", "u32", None, False),
    ("ExpPoolFlags", "u32", None, False),
    ("ExpPoolQuotaCookie", "u64", None, False),
    ("KeNumberProcessors", "u32", None, True),
    ("KiProcessorBlock", "pointer_array", "_KPRCB", False),
    ("PsLoadedModuleList", "list_entry", "_LIST_ENTRY", True),
    ("PsActiveProcessHead", "list_entry", "_LIST_ENTRY", False),
    ("PsInitialSystemProcess", "pointer", "_EPROCESS", True),
    ("KdDebuggerDataBlock", "struct", "_KDDEBUGGER_DATA64", False),
    ("KdpDataBlockEncoded", "u8", None, False),
    ("KiWaitNever", "u64", None, False),
    ("KiWaitAlways", "u64", None, False),
    ("MmSystemRangeStart", "pointer", None, True),
    ("MmPfnDatabase", "pointer", "_MMPFN", False),
    ("MiVisibleState", "pointer", "_MI_VISIBLE_STATE", False),
    ("MiState", "struct", "_MI_SYSTEM_INFORMATION", False),
    ("ExPoolState", "struct", "_EX_POOL_HEAP_MANAGER_STATE", False),
    ("RtlpHpHeapGlobals", "struct", "_RTLP_HP_HEAP_GLOBALS", False),
    ("ExpSessionPoolTrackTable", "pointer", "_POOL_TRACKER_TABLE", False),
    ("ExpSessionPoolTrackTableSize", "size_t", None, False),
    ("ExpSessionPoolTrackTableMask", "size_t", None, False),
    ("PoolVector", "pointer_array", "_POOL_DESCRIPTOR", False),
    ("ExpNumberOfPagedPools", "u32", None, False),
    ("ExpNumberOfNonPagedPools", "u32", None, False),
    ("ExpPagedPoolDescriptor", "pointer_array", "_POOL_DESCRIPTOR", False),
    ("ExpNonPagedPoolDescriptor", "pointer_array", "_POOL_DESCRIPTOR", False),
    ("MmNonPagedPoolStart", "pointer", None, False),
    ("MiNonPagedPoolStartAligned", "pointer", None, False),
    ("MiNonPagedPoolEnd", "pointer", None, False),
    ("MmPagedPoolEnd", "pointer", None, False),
    ("MmSizeOfPagedPoolInBytes", "size_t", None, False),
    ("MiPagedPoolStart", "pointer", None, False),
    ("MmMaximumNonPagedPoolInBytes", "size_t", None, False),
    ("ExpHotTagArray", "u32", None, False),  # an array of ULONG tags; length from the gap
]
ARRAY_CAP = 4096
# Functions in nt.c: (name, exported by the real nt, section, families). families: "all", "legacy"
# (the pool before the segment heap, 7601-17763) or "heap" (18362 on).
FUNCTIONS = [
    ("KiSystemStartup", False, ".text", "all"),
    ("ExAllocatePoolWithTag", True, ".text", "all"),
    ("ExAllocatePoolWithQuotaTag", True, ".text", "all"),
    ("ExFreePoolWithTag", True, ".text", "all"),
    ("ExFreePool", True, ".text", "all"),
    ("ExAllocatePool2", True, ".text", "all"),
    ("ExAllocateHeapPool", False, "POOLCODE", "heap"),
    ("ExFreeHeapPool", False, "POOLCODE", "heap"),
    ("ExpInsertPoolTracker", False, "POOLCODE", "legacy"),
    ("ExpRemovePoolTracker", False, ".text", "legacy"),
    ("ExpPoolAllocateBlock", False, ".text", "all"),
    ("ExpPoolReleaseBlock", False, ".text", "all"),
    ("ExpPoolChargeTracker", False, ".text", "all"),
    ("KeBugCheckEx", True, ".text", "all"),
    ("DbgPrint", True, ".text", "all"),
    ("DbgBreakPoint", True, ".text", "all"),
    ("RtlpBreakWithStatusInstruction", False, ".text", "all"),
    ("KiPageFault", False, ".text", "all"),
    ("KiExceptionDispatch", False, ".text", "all"),
    ("KiDispatchException", False, ".text", "all"),
    ("MmAccessFault", False, ".text", "all"),
    ("KiStartSystemThread", False, ".text", "all"),
    ("PspSystemThreadStartup", False, ".text", "all"),
    ("ExpWorkerThread", False, ".text", "all"),
    ("KiZeroGlobal", False, ".text", "all"),
]
# Functions emitted only when the real build has them; the others are emitted in every family of
# their kind (the Exp* helpers are named after real nt functions, but whether a build has a symbol
# of that name varies; ExpPool*Block/ExpPoolChargeTracker and KiZeroGlobal are made up).
BUILD_GATED_FUNCTIONS = {"ExAllocatePool2"}
# The segment heap backs the pool from 19H1 (18362) on (docs/pool-structures.md §5).
SEGMENT_HEAP_BUILD = 18362

C_BASE = {
    "char": "char", "unsigned char": "unsigned char", "short": "short",
    "unsigned short": "unsigned short", "int": "int", "unsigned int": "unsigned int",
    "long": "long", "unsigned long": "unsigned long", "long long": "long long",
    "unsigned long long": "unsigned long long", "wchar": "unsigned short", "HRESULT": "long",
    "f32": "float", "float": "float", "double": "double", "void": "void", "bool": "_Bool",
}


class BuildError(Exception):
    pass


KEEP_DIR = None  # --keep-temp: build in KEEP_DIR/<name> and leave the intermediates there


@contextlib.contextmanager
def workdir(name):
    if KEEP_DIR:
        path = os.path.join(KEEP_DIR, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="pooldump-%s-" % name) as path:
            yield path


def fail(msg):
    raise BuildError(msg)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def run(cmd, cwd=None):
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        fail("command failed (%d): %s\n%s%s" % (proc.returncode, " ".join(cmd), proc.stdout,
                                                 proc.stderr))
    if proc.stderr.strip():
        # clang and lld warnings are errors here: the outputs are committed.
        fail("command printed warnings: %s\n%s" % (" ".join(cmd), proc.stderr))
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# ISF model


class Isf:
    def __init__(self, path):
        with lzma.open(path, "rt") as f:
            data = json.load(f)
        self.types = data["user_types"]
        self.enums = data["enums"]
        self.base = data["base_types"]
        self.symbols = data["symbols"]
        self.pdb = data["metadata"]["windows"]["pdb"]
        self._addrs = sorted(set(v["address"] for v in self.symbols.values()))

    def sizeof(self, ty):
        k = ty["kind"]
        if k == "base":
            return self.base[ty["name"]]["size"]
        if k == "pointer":
            return 8
        if k in ("struct", "union", "class"):
            return self.types[ty["name"]]["size"]
        if k == "enum":
            return self.enums[ty["name"]]["size"]
        if k == "array":
            return ty["count"] * self.sizeof(ty["subtype"])
        if k == "bitfield":
            return self.sizeof(ty["type"])
        if k == "function":
            return 0
        fail("unknown ISF type kind %r" % k)

    def tag_kind(self, name, fallback="struct"):
        t = self.types.get(name)
        return "union" if (t and t["kind"] == "union") or (not t and fallback == "union") \
            else "struct"

    def symbol_gap(self, name):
        """Bytes from the symbol to the next symbol address in the real build."""
        a = self.symbols[name]["address"]
        i = bisect.bisect_right(self._addrs, a)
        if i >= len(self._addrs):
            fail("no symbol after %s" % name)
        return self._addrs[i] - a


def sorted_fields(tdef):
    """Fields in layout order: offset, whole members before bitfields, then bit position."""
    def key(item):
        name, f = item
        ty = f["type"]
        bf = ty["kind"] == "bitfield"
        return (f["offset"], 1 if bf else 0, ty.get("bit_position", 0) if bf else 0, name)
    return sorted(tdef["fields"].items(), key=key)


def byvalue_types(ty):
    """Names of structs/unions a member of type `ty` contains by value."""
    k = ty["kind"]
    if k in ("struct", "union", "class"):
        return [ty["name"]]
    if k == "array":
        return byvalue_types(ty["subtype"])
    return []


class Plan:
    """Which types, enums and globals one family's nt.c declares, and how."""

    def __init__(self, isf, fam):
        self.isf, self.fam = isf, fam
        full = []
        seen = set()
        stack = [t for t in reversed(FULL_TYPES) if t in isf.types]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            full.append(n)
            only = PARTIAL_TYPES.get(n)
            for fname, f in sorted_fields(isf.types[n]):
                if only is not None and fname not in only:
                    continue
                for dep in byvalue_types(f["type"]):
                    if dep not in seen:
                        stack.append(dep)
        self.full = set(full)
        self.stubs = set(t for t in STUB_TYPES if t in isf.types and t not in self.full)
        self.emitted = self.full | self.stubs
        for n in sorted(self.emitted):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
                fail("type name %r is not a C identifier" % n)
            if isf.types[n]["size"] == 0:
                fail("type %s has size 0" % n)
        self.enums = [e for e in ENUMS if e in isf.enums]
        for e in self.enums:
            if isf.enums[e]["size"] != 4 or isf.enums[e]["base"] not in ("int", "long"):
                fail("enum %s is not int-sized" % e)
        # Every global the real build has, with the array lengths from the real gaps.
        self.globals = []
        for name, kind, target, exported in GLOBALS:
            if name not in isf.symbols:
                continue
            if kind == "struct" and name != "KdDebuggerDataBlock" and target not in self.emitted:
                fail("global %s needs type %s, which is not emitted" % (name, target))
            count = None
            if kind == "pointer_array":
                count = min(isf.symbol_gap(name) // 8, ARRAY_CAP)
            elif name == "ExpHotTagArray":
                count = min(isf.symbol_gap(name) // 4, ARRAY_CAP)
            elif name == "KdDebuggerDataBlock":
                count = isf.symbol_gap(name) // 8
            self.globals.append((name, kind, target, exported, count))
        self.global_names = set(g[0] for g in self.globals)
        kind = "heap" if fam.build >= SEGMENT_HEAP_BUILD else "legacy"
        self.heap = kind == "heap"
        self.functions = [f[:3] for f in FUNCTIONS
                          if (f[0] not in BUILD_GATED_FUNCTIONS or f[0] in isf.symbols)
                          and f[3] in ("all", kind)]
        # A struct-typed member whose type is not emitted becomes an opaque byte array of its
        # size; every other member keeps its real type.
        self.opaque = {}  # (type, field) -> True
        for n in self.emitted:
            for fname, f in isf.types[n]["fields"].items():
                if any(d not in self.emitted for d in byvalue_types(f["type"])):
                    self.opaque[(n, fname)] = True

    def pointee_decl(self, name):
        if name is None:
            return "void"
        if name in self.isf.types:
            return "%s %s" % (self.isf.tag_kind(name), name)
        return "struct %s" % name


# ---------------------------------------------------------------------------------------------
# C generation


class CWriter:
    def __init__(self, plan):
        self.plan = plan
        self.isf = plan.isf
        self.forward = set()

    def cbase(self, name):
        if name not in C_BASE:
            fail("no C spelling for ISF base type %r" % name)
        return C_BASE[name]

    def decl(self, ty, inner, opaque=False):
        """C declaration of `inner` (a declarator) with ISF type `ty`."""
        k = ty["kind"]
        if k == "base":
            return "%s %s" % (self.cbase(ty["name"]), inner)
        if k == "pointer":
            s = ty["subtype"]
            sk = s["kind"]
            if sk in ("struct", "union", "class"):
                kw = self.isf.tag_kind(s["name"], sk)
                self.forward.add((kw, s["name"]))
                return "%s %s *%s" % (kw, s["name"], inner)
            if sk == "function":
                return "void *%s" % inner
            if sk == "array":
                return self.decl(s, "(*%s)" % inner)
            if sk == "enum":
                return self.decl({"kind": "base", "name": self.isf.enums[s["name"]]["base"]},
                                 "*" + inner)
            return self.decl(s, "*" + inner)
        if k == "array":
            return self.decl(ty["subtype"], "%s[%d]" % (inner, ty["count"]), opaque)
        if k in ("struct", "union", "class"):
            if opaque or ty["name"] not in self.plan.emitted:
                return "unsigned char %s[%d]" % (inner, self.isf.types[ty["name"]]["size"])
            return "%s %s %s" % (self.isf.tag_kind(ty["name"], k), ty["name"], inner)
        if k == "enum":
            e = self.isf.enums[ty["name"]]
            if ty["name"] in self.plan.enums:
                return "enum %s %s" % (ty["name"], inner)
            return "%s %s" % (self.cbase(e["base"]), inner)
        fail("cannot declare ISF kind %r" % k)

    def struct_def(self, name):
        """`struct NAME {...};` with the real layout (docs/testdata-nt.md).

        Fields are laid out in "lanes": each lane is a run of non-overlapping members with
        explicit byte pads; a member that overlaps a previous one (a union alternative in the
        real type) opens a new lane, and the lanes are overlaid in an anonymous union. Clang
        flattens anonymous members into the parent's CodeView field list, so the PDB carries
        the real names at the real offsets plus pads named __*.
        """
        isf = self.isf
        t = isf.types[name]
        size = t["size"]
        lanes = []
        npad = [0]

        def pad_name():
            npad[0] += 1
            return "__pad%d" % (npad[0] - 1)

        class Lane:
            def __init__(self):
                self.items = []
                self.cursor = 0
                self.unit = None  # [offset, size, used_bits, ctype]

            def close_unit(self):
                u = self.unit
                if u and u[2] < u[1] * 8:
                    self.items.append("%s : %d;" % (u[3], u[1] * 8 - u[2]))
                self.unit = None

            def pad_to(self, off):
                if off > self.cursor:
                    self.items.append("unsigned char %s[%d];" % (pad_name(), off - self.cursor))
                    self.cursor = off

        def place(lane, fname, f):
            ty = f["type"]
            off = f["offset"]
            if ty["kind"] == "bitfield":
                base = ty["type"]
                if base["kind"] != "base":
                    fail("%s.%s: bitfield of %r" % (name, fname, base))
                usize = isf.sizeof(base)
                ctype = self.cbase(base["name"])
                pos, ln = ty["bit_position"], ty["bit_length"]
                u = lane.unit
                if u and u[0] == off and u[1] == usize and u[2] <= pos:
                    if pos > u[2]:
                        lane.items.append("%s : %d;" % (ctype, pos - u[2]))
                    lane.items.append("%s %s : %d;" % (ctype, fname, ln))
                    u[2] = pos + ln
                    return True
                if lane.cursor <= off:
                    lane.close_unit()
                    lane.pad_to(off)
                    if pos:
                        lane.items.append("%s : %d;" % (ctype, pos))
                    lane.items.append("%s %s : %d;" % (ctype, fname, ln))
                    lane.unit = [off, usize, pos + ln, ctype]
                    lane.cursor = off + usize
                    return True
                return False
            if lane.cursor <= off:
                lane.close_unit()
                lane.pad_to(off)
                opaque = self.plan.opaque.get((name, fname), False)
                lane.items.append(self.decl(ty, fname, opaque) + ";")
                lane.cursor = off + isf.sizeof(ty)
                return True
            return False

        for fname, f in sorted_fields(t):
            for lane in lanes:
                if place(lane, fname, f):
                    break
            else:
                lane = Lane()
                lanes.append(lane)
                if not place(lane, fname, f):
                    fail("cannot place %s.%s" % (name, fname))
        for lane in lanes:
            lane.close_unit()
            if lane.cursor > size:
                fail("%s: members run past the size (%d > %d)" % (name, lane.cursor, size))

        kw = isf.tag_kind(name)
        out = ["%s %s {" % (kw, name)]
        end = max([l.cursor for l in lanes] or [0])
        if kw == "struct" and len(lanes) == 1:
            out += ["    " + i for i in lanes[0].items]
            if end < size:
                out.append("    unsigned char __size[%d];" % (size - end)
                           if end == 0 else "    unsigned char __tail[%d];" % (size - end))
        else:
            ind = "        " if kw == "struct" else "    "
            if kw == "struct":
                out.append("    union {")
            for lane in lanes:
                if kw == "union" and len(lane.items) == 1 and not lane.items[0].startswith(
                        "unsigned char __pad") and lane.unit is None:
                    out.append(ind + lane.items[0])
                else:
                    out.append(ind + "struct {")
                    out += [ind + "    " + i for i in lane.items]
                    out.append(ind + "};")
            if end < size or not lanes:
                out.append(ind + "unsigned char __size[%d];" % size)
            if kw == "struct":
                out.append("    };")
        out.append("};")
        out.append('_Static_assert(sizeof(%s %s) == 0x%X, "%s");' % (kw, name, size, name))
        return out

    def type_order(self):
        """Emitted types, each after the types it contains by value (then by name)."""
        isf, plan = self.isf, self.plan
        order, done = [], set()

        def visit(n, path):
            if n in done:
                return
            if n in path:
                fail("by-value cycle through %s" % n)
            for fname, f in sorted_fields(isf.types[n]):
                if plan.opaque.get((n, fname)):
                    continue
                for d in byvalue_types(f["type"]):
                    if d in plan.emitted:
                        visit(d, path | {n})
            done.add(n)
            order.append(n)

        for n in sorted(plan.emitted):
            visit(n, frozenset())
        return order

    def enum_def(self, name):
        e = self.isf.enums[name]
        items = sorted(e["constants"].items(), key=lambda kv: (kv[1], kv[0]))
        out = ["enum %s {" % name]
        out += ["    %s = %d," % (k, v) for k, v in items]
        out.append("};")
        return out

    def types_source(self, header):
        plan, isf = self.plan, self.isf
        body = []
        for e in plan.enums:
            body += self.enum_def(e) + [""]
        body.append("#pragma pack(push, 1)")
        body.append("")
        for n in self.type_order():
            nopaque = sum(1 for f in isf.types[n]["fields"] if plan.opaque.get((n, f)))
            kind = "stub" if n in plan.stubs else "real layout"
            if nopaque:
                kind += ", %d struct member%s opaque" % (nopaque, "s" if nopaque > 1 else "")
            body.append("/* %s: 0x%X bytes, %s */" % (n, isf.types[n]["size"], kind))
            body += self.struct_def(n) + [""]
        body.append("#pragma pack(pop)")
        fwd = ["%s %s;" % kv for kv in sorted(self.forward)]
        # Enumerator names share C's ordinary namespace with the globals.
        names = set()
        for e in plan.enums:
            for k in isf.enums[e]["constants"]:
                if k in names or k in plan.global_names:
                    fail("enumerator %s collides" % k)
                names.add(k)
        return "\n".join(header + fwd + [""] + body) + "\n"

    # -- globals and code --------------------------------------------------------------------

    def global_decl(self, g):
        name, kind, target, exported, count = g
        plan = self.plan
        if kind == "pointer":
            d = "%s *%s" % (plan.pointee_decl(target), name)
        elif kind == "pointer_array":
            d = "%s *%s[%d]" % (plan.pointee_decl(target), name, count)
        elif kind == "size_t" or kind == "u64":
            d = "unsigned long long %s" % name
        elif kind == "u32":
            d = "unsigned long %s" % name if count is None else \
                "unsigned long %s[%d]" % (name, count)
        elif kind == "u8":
            d = "unsigned char %s" % name
        elif kind == "list_entry":
            d = "struct _LIST_ENTRY %s" % name
        elif kind == "struct" and name == "KdDebuggerDataBlock":
            # No ISF (and no public PDB) has _KDDEBUGGER_DATA64: reserve the real gap as qwords.
            d = "unsigned long long %s[%d]" % (name, count)
        elif kind == "struct":
            d = "%s %s %s" % (self.isf.tag_kind(target), target, name)
        else:
            fail("unknown global kind %s" % kind)
        size = self.global_size(g)
        align = 64 if size >= 64 and kind == "struct" else (16 if size >= 16 else None)
        attrs = ["__attribute__((used))"]
        if align:
            attrs.append("__attribute__((aligned(%d)))" % align)
        pre = "__declspec(dllexport) " if exported else ""
        return "%s%s %s;" % (pre, d, " ".join(attrs))

    def global_size(self, g):
        name, kind, target, exported, count = g
        if kind in ("pointer", "size_t", "u64"):
            return 8
        if kind == "pointer_array":
            return 8 * count
        if kind == "u32":
            return 4 if count is None else 4 * count
        if kind == "u8":
            return 1
        if kind == "list_entry":
            return 16
        if name == "KdDebuggerDataBlock":
            return 8 * count
        return self.isf.types[target]["size"]

    def code_source(self):
        plan, isf = self.plan, self.isf
        has = plan.global_names.__contains__
        fnames = set(f[0] for f in plan.functions)
        exp = dict((f[0], f[1]) for f in plan.functions)
        big_fields = isf.types["_POOL_TRACKER_BIG_PAGES"]["fields"]
        L = []
        a = L.append

        def dll(fn):
            return "__declspec(dllexport) " if exp.get(fn) else ""

        a("__attribute__((noinline)) void KiZeroGlobal(void *Address, unsigned long long Length)")
        a("{")
        a("    volatile unsigned char *Byte = Address;")
        a("    while (Length--)")
        a("        *Byte++ = 0;")
        a("}")
        a("")
        runtime_code(a, plan.heap, "ExAllocatePool2" in fnames, big_fields, dll)
        a("/* The image entry point: set up the globals the pool code reads. */")
        a("void KiSystemStartup(void *LoaderBlock)")
        a("{")
        for g in plan.globals:
            name = g[0]
            if g[1] in ("struct", "pointer_array") or (g[1] == "u32" and g[4] is not None):
                a("    KiZeroGlobal(&%s, sizeof(%s));" % (name, name))
        for name, kind, target, exported, count in plan.globals:
            if kind == "list_entry":
                a("    %s.Flink = %s.Blink = &%s;" % (name, name, name))
        a("    PoolTrackTableMask = 0xFFF;")
        a("    PoolTrackTableSize = PoolTrackTableMask + 2;")
        a("    PoolBigPageTableSize = 0x1000;")
        a("    ExPoolTagTables[0] = PoolTrackTable;")
        a("    KeNumberProcessors = 1;")
        a("    KdpDataBlockEncoded = 0;")
        if has("MiVisibleState") and has("MiState"):
            a("    MiVisibleState = &MiState.Vs; /* MiVisibleState == &MiState.Vs (pool.md §1) */")
        if has("PsInitialSystemProcess"):
            a("    PsInitialSystemProcess = (struct _EPROCESS *)LoaderBlock;")
        a("    ExFreePoolWithTag(ExAllocatePoolWithTag(NonPagedPool, 0x20, 'looP'), 'looP');")
        a("}")
        return L

    def globals_source(self):
        return [self.global_decl(g) for g in self.plan.globals]


TRAP_ASM = r"""
/* The page-fault trap: the CPU pushed SS, RSP, RFLAGS, CS, RIP and the error code; the
   frame below them is a KTRAP_FRAME (Rax +0x30 ... R11 +0x60, Rbp +0x158, ErrorCode +0x160,
   Rip +0x168, Rsp +0x180), described by UWOP_PUSH_MACHFRAME as in the real KiPageFault. */
.globl KiPageFault
.def KiPageFault; .scl 2; .type 32; .endef
.p2align 4
KiPageFault:
.seh_proc KiPageFault
    .seh_pushframe @code
    push rbp
    .seh_pushreg rbp
    sub rsp, 0x158
    .seh_stackalloc 0x158
    lea rbp, [rsp + 0x80]
    .seh_setframe rbp, 0x80
    .seh_endprologue
    mov qword ptr [rbp - 0x50], rax
    mov qword ptr [rbp - 0x48], rcx
    mov qword ptr [rbp - 0x40], rdx
    mov qword ptr [rbp - 0x38], r8
    mov qword ptr [rbp - 0x30], r9
    mov qword ptr [rbp - 0x28], r10
    mov qword ptr [rbp - 0x20], r11
    mov ecx, dword ptr [rbp + 0xe0]
    mov rdx, cr2
    xor r8d, r8d
    lea r9, [rbp - 0x80]
    call MmAccessFault
    test eax, eax
    jns KiPageFault$resolved
    mov ecx, eax
    lea rdx, [rbp - 0x80]
    mov r8, cr2
    call KiExceptionDispatch
KiPageFault$resolved:
    mov rax, qword ptr [rbp - 0x50]
    mov rcx, qword ptr [rbp - 0x48]
    mov rdx, qword ptr [rbp - 0x40]
    mov r8, qword ptr [rbp - 0x38]
    mov r9, qword ptr [rbp - 0x30]
    mov r10, qword ptr [rbp - 0x28]
    mov r11, qword ptr [rbp - 0x20]
    lea rsp, [rbp + 0xd8]
    pop rbp
    add rsp, 8
    iretq
.seh_endproc
/* KiExceptionDispatch(Status, TrapFrame, FaultingVa): an EXCEPTION_RECORD (at +0x30) and a
   CONTEXT (at +0xD0, 16-byte aligned) on the stack, the volatile registers, RIP, RSP, RBP and
   EFLAGS from the trap frame, the nonvolatile ones as they still are; then
   KiDispatchException(&Record, &Context). */
.globl KiExceptionDispatch
.def KiExceptionDispatch; .scl 2; .type 32; .endef
.p2align 4
KiExceptionDispatch:
.seh_proc KiExceptionDispatch
    sub rsp, 0x5a8
    .seh_stackalloc 0x5a8
    .seh_endprologue
    mov dword ptr [rsp + 0x30], ecx
    mov dword ptr [rsp + 0x34], 0
    mov qword ptr [rsp + 0x38], 0
    mov rax, qword ptr [rdx + 0x168]
    mov qword ptr [rsp + 0x40], rax
    mov dword ptr [rsp + 0x48], 2
    mov eax, dword ptr [rdx + 0x160]
    shr eax, 1
    and eax, 1
    mov qword ptr [rsp + 0x50], rax
    mov qword ptr [rsp + 0x58], r8
    mov dword ptr [rsp + 0x100], 0x10000f
    mov word ptr [rsp + 0x108], 0x10
    mov word ptr [rsp + 0x10a], 0x2b
    mov word ptr [rsp + 0x10c], 0x2b
    mov word ptr [rsp + 0x10e], 0x53
    mov word ptr [rsp + 0x110], 0x2b
    mov word ptr [rsp + 0x112], 0x18
    mov eax, dword ptr [rdx + 0x178]
    mov dword ptr [rsp + 0x114], eax
    mov rax, qword ptr [rdx + 0x30]
    mov qword ptr [rsp + 0x148], rax
    mov rax, qword ptr [rdx + 0x38]
    mov qword ptr [rsp + 0x150], rax
    mov rax, qword ptr [rdx + 0x40]
    mov qword ptr [rsp + 0x158], rax
    mov qword ptr [rsp + 0x160], rbx
    mov rax, qword ptr [rdx + 0x180]
    mov qword ptr [rsp + 0x168], rax
    mov rax, qword ptr [rdx + 0x158]
    mov qword ptr [rsp + 0x170], rax
    mov qword ptr [rsp + 0x178], rsi
    mov qword ptr [rsp + 0x180], rdi
    mov rax, qword ptr [rdx + 0x48]
    mov qword ptr [rsp + 0x188], rax
    mov rax, qword ptr [rdx + 0x50]
    mov qword ptr [rsp + 0x190], rax
    mov rax, qword ptr [rdx + 0x58]
    mov qword ptr [rsp + 0x198], rax
    mov rax, qword ptr [rdx + 0x60]
    mov qword ptr [rsp + 0x1a0], rax
    mov qword ptr [rsp + 0x1a8], r12
    mov qword ptr [rsp + 0x1b0], r13
    mov qword ptr [rsp + 0x1b8], r14
    mov qword ptr [rsp + 0x1c0], r15
    mov rax, qword ptr [rdx + 0x168]
    mov qword ptr [rsp + 0x1c8], rax
    lea rcx, [rsp + 0x30]
    lea rdx, [rsp + 0xd0]
    call KiDispatchException
    int3
.seh_endproc
"""


def runtime_code(a, heap, has_pool2, big_fields, dll):
    # Top-level assembly: simulator-implemented routines, breakpoints and the page-fault trap.
    a("/*")
    a(" * The simulated target (crates/kit/src/run/) executes this image's code and the drivers' code on")
    a(" * a simulated CPU. The routines marked HOST below are performed by the simulator when control")
    a(" * reaches their address (carving pool blocks, charging the tracker rows of the current")
    a(" * processor, bug checks, debug output); their bodies are a single ud2 that the CPU never")
    a(" * executes. Everything else here runs as compiled.")
    a(" */")
    a("__asm__(")
    a("    \".intel_syntax noprefix\\n\"")
    a("    \".text\\n\"")
    for name in ("KeBugCheckEx", "DbgPrint", "ExpPoolAllocateBlock", "ExpPoolReleaseBlock",
                 "ExpPoolChargeTracker"):
        a("    \".globl %s\\n.def %s; .scl 2; .type 32; .endef\\n.p2align 4\\n%s:\\n    ud2\\n\"" %
          (name, name, name))
    a("    /* DbgBreakPoint and RtlpBreakWithStatusInstruction: int 3; ret, as in the real nt. */")
    for name in ("DbgBreakPoint", "RtlpBreakWithStatusInstruction"):
        a("    \".globl %s\\n.def %s; .scl 2; .type 32; .endef\\n.p2align 4\\n%s:\\n    int3\\n    ret\\n\"" %
          (name, name, name))
    in_comment = False
    for line in TRAP_ASM.strip("\n").split("\n"):
        if in_comment or line.lstrip().startswith("/*"):
            a("    " + line.rstrip())
            in_comment = "*/" not in line
        else:
            a("    \"%s\\n\"" % line)
    a("    /* The linker directive MSVC emits for __declspec(dllexport) definitions. */")
    a("    \".section .drectve,\\\"yn\\\"\\n\"")
    for name in ("KeBugCheckEx", "DbgPrint", "DbgBreakPoint"):
        a("    \".ascii \\\" -export:%s\\\"\\n\"" % name)
    a("    \".text\\n\"")
    a("    \".att_syntax\\n\");")
    a("")
    a("__declspec(noreturn) %svoid KeBugCheckEx(unsigned long BugCheckCode, unsigned long long P1, "
      "unsigned long long P2, unsigned long long P3, unsigned long long P4); /* HOST */" % dll("KeBugCheckEx"))
    a("%sunsigned long DbgPrint(const char *Format, ...); /* HOST */" % dll("DbgPrint"))
    a("%svoid DbgBreakPoint(void);" % dll("DbgBreakPoint"))
    a("/* HOST: carve a block of the pool type from the build's allocator (pool header, LFH/VS")
    a("   subsegment or big pages and the big-page table entry); *Charged = the bytes the tracker")
    a("   is charged. NULL when the pool is exhausted. */")
    a("void *ExpPoolAllocateBlock(enum _POOL_TYPE PoolType, unsigned long long NumberOfBytes, "
      "unsigned long Tag, unsigned long long *Charged);")
    a("/* HOST: release the block at P; returns its tag as the header or big-page table holds it")
    a("   (0 if P is not a live pool block), with its charged bytes and pool type. */")
    a("unsigned long ExpPoolReleaseBlock(void *P, unsigned long long *Charged, "
      "enum _POOL_TYPE *PoolType);")
    a("/* HOST: add (Sign 1) or remove (Sign -1) one allocation of Key in the current processor's")
    a("   tracker table (ExPoolTagTables[Prcb.Number]), as pool.md section 2.3 describes. */")
    a("void ExpPoolChargeTracker(unsigned long Key, unsigned long long NumberOfBytes, "
      "enum _POOL_TYPE PoolType, long Sign);")
    a("long MmAccessFault(unsigned long FaultStatus, void *VirtualAddress, char PreviousMode, "
      "void *TrapInformation);")
    a("")
    a("#define PROTECTED_POOL 0x80000000UL")
    a("#define NOTAIL __attribute__((noinline, disable_tail_calls))")
    a("#define POOLCODE __attribute__((noinline, disable_tail_calls, section(\"POOLCODE\")))")
    a("")
    a("/* A kernel-mode fault that no PTE resolves. On a user-range address (a NULL pointer, say)")
    a("   it is an access violation for the exception dispatcher; on a system address it is")
    a("   PAGE_FAULT_IN_NONPAGED_AREA, parameter 3 the faulting instruction (KTRAP_FRAME.Rip). */")
    a("NOTAIL long MmAccessFault(unsigned long FaultStatus, void *VirtualAddress, char PreviousMode, "
      "void *TrapInformation)")
    a("{")
    a("    unsigned long long Rip = *(unsigned long long *)((char *)TrapInformation + 0x168);")
    a("    if ((unsigned long long)VirtualAddress < 0x800000000000ULL)")
    a("        return (long)0xC0000005; /* STATUS_ACCESS_VIOLATION */")
    a("    KeBugCheckEx(0x50, (unsigned long long)VirtualAddress, (FaultStatus >> 1) & 1, Rip, 2);")
    a("}")
    a("")
    a("struct _EXCEPTION_RECORD64 {")
    a("    long ExceptionCode;")
    a("    unsigned long ExceptionFlags;")
    a("    unsigned long long ExceptionRecord;")
    a("    unsigned long long ExceptionAddress;")
    a("    unsigned long NumberParameters;")
    a("    unsigned long __unusedAlignment;")
    a("    unsigned long long ExceptionInformation[15];")
    a("};")
    a("")
    a("/* No handler guards the faulting code: the system thread's exception filter")
    a("   (PspUnhandledExceptionInSystemThread) stops the machine with")
    a("   SYSTEM_THREAD_EXCEPTION_NOT_HANDLED, parameters 3 and 4 the exception and context")
    a("   records KiExceptionDispatch built on the stack. (The handler search itself is not")
    a("   modelled.) */")
    a("NOTAIL void KiDispatchException(struct _EXCEPTION_RECORD64 *ExceptionRecord, "
      "void *ContextRecord)")
    a("{")
    a("    KeBugCheckEx(0x7E, ExceptionRecord->ExceptionCode, ExceptionRecord->ExceptionAddress,")
    a("                 (unsigned long long)ExceptionRecord, (unsigned long long)ContextRecord);")
    a("}")
    a("")
    if not heap:
        a("/* Windows 7 to 1809 (WRK's ExpInsertPoolTracker): PoolHitTag is checked when the tracker")
        a("   is charged, with DbgBreakPoint. In the POOLCODE section, as in the real nt (MemProcFS")
        a("   looks for that section name). */")
        a("POOLCODE void ExpInsertPoolTracker(unsigned long Key, unsigned long long NumberOfBytes, "
          "enum _POOL_TYPE PoolType)")
        a("{")
        a("    Key &= ~PROTECTED_POOL;")
        a("    if (Key == PoolHitTag)")
        a("        DbgBreakPoint();")
        a("    ExpPoolChargeTracker(Key, NumberOfBytes, PoolType, 1);")
        a("}")
        a("")
        a("NOTAIL void ExpRemovePoolTracker(unsigned long Key, unsigned long long NumberOfBytes, "
          "enum _POOL_TYPE PoolType)")
        a("{")
        a("    Key &= ~PROTECTED_POOL;")
        a("    if (Key == PoolHitTag)")
        a("        DbgBreakPoint();")
        a("    ExpPoolChargeTracker(Key, NumberOfBytes, PoolType, -1);")
        a("}")
        a("")
        a("NOTAIL %svoid *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long "
          "NumberOfBytes, unsigned long Tag)" % dll("ExAllocatePoolWithTag"))
        a("{")
        a("    unsigned long long Charged;")
        a("    void *P = ExpPoolAllocateBlock(PoolType, NumberOfBytes, Tag, &Charged);")
        a("    if (P)")
        a("        ExpInsertPoolTracker(Tag, Charged, PoolType);")
        a("    return P;")
        a("}")
        a("")
        a("/* WRK: a mismatching tag matters only for protected tags, and then it is a DbgPrint and a")
        a("   DbgBreakPoint, not a bug check. Freeing something that is not a live block is")
        a("   BAD_POOL_CALLER 7 (already freed). */")
        a("NOTAIL %svoid ExFreePoolWithTag(void *P, unsigned long TagToFree)" % dll("ExFreePoolWithTag"))
        a("{")
        a("    unsigned long long Charged;")
        a("    enum _POOL_TYPE PoolType;")
        a("    unsigned long Tag = ExpPoolReleaseBlock(P, &Charged, &PoolType);")
        a("    if (Tag == 0)")
        a("        KeBugCheckEx(0xC2, 7, 0, 0, (unsigned long long)P);")
        a("    if ((Tag & PROTECTED_POOL) && (Tag & ~PROTECTED_POOL) != (TagToFree & ~PROTECTED_POOL)) {")
        a("        DbgPrint(\"EX: Invalid attempt to free protected pool block %p (%c%c%c%c)\\n\", P,")
        a("                 Tag & 0xFF, (Tag >> 8) & 0xFF, (Tag >> 16) & 0xFF, (Tag >> 24) & 0x7F);")
        a("        DbgBreakPoint();")
        a("    }")
        a("    ExpRemovePoolTracker(Tag, Charged, PoolType);")
        a("}")
        a("")
    else:
        a("/* 19H1 on (decompiled ExAllocateHeapPool/ExFreeHeapPool): the pool is a segment heap;")
        a("   PoolHitTag is compared inline (__debugbreak) once the block exists, just before the")
        a("   tracker of the current processor is charged. */")
        a("POOLCODE void *ExAllocateHeapPool(enum _POOL_TYPE PoolType, unsigned long long "
          "NumberOfBytes, unsigned long Tag)")
        a("{")
        a("    unsigned long long Charged;")
        a("    void *P = ExpPoolAllocateBlock(PoolType, NumberOfBytes, Tag, &Charged);")
        a("    if (!P)")
        a("        return 0;")
        a("    if (Tag == PoolHitTag)")
        a("        __debugbreak();")
        a("    ExpPoolChargeTracker(Tag, Charged, PoolType, 1);")
        a("    return P;")
        a("}")
        a("")
        a("/* ExFreeHeapPool takes no tag: the tag a caller passes to ExFreePoolWithTag is not checked")
        a("   against the header. The break compares the header's tag. */")
        a("POOLCODE void ExFreeHeapPool(void *P)")
        a("{")
        a("    unsigned long long Charged;")
        a("    enum _POOL_TYPE PoolType;")
        a("    unsigned long Tag = ExpPoolReleaseBlock(P, &Charged, &PoolType);")
        a("    if (Tag == 0)")
        a("        KeBugCheckEx(0xC2, 0, 0, (unsigned long long)P, 0);")
        a("    if (Tag == PoolHitTag)")
        a("        __debugbreak();")
        a("    ExpPoolChargeTracker(Tag, Charged, PoolType, -1);")
        a("}")
        a("")
        a("NOTAIL %svoid *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long "
          "NumberOfBytes, unsigned long Tag)" % dll("ExAllocatePoolWithTag"))
        a("{")
        a("    return ExAllocateHeapPool(PoolType, NumberOfBytes, Tag);")
        a("}")
        a("")
        a("NOTAIL %svoid ExFreePoolWithTag(void *P, unsigned long TagToFree)" % dll("ExFreePoolWithTag"))
        a("{")
        a("    ExFreeHeapPool(P);")
        a("}")
        a("")
    a("NOTAIL %svoid *ExAllocatePoolWithQuotaTag(enum _POOL_TYPE PoolType, unsigned long long "
      "NumberOfBytes, unsigned long Tag)" % dll("ExAllocatePoolWithQuotaTag"))
    a("{")
    a("    /* Quota charging is not modelled; the block is tagged and tracked like any other. */")
    a("    return ExAllocatePoolWithTag(PoolType, NumberOfBytes, Tag);")
    a("}")
    a("")
    a("NOTAIL %svoid ExFreePool(void *P)" % dll("ExFreePool"))
    a("{")
    a("    ExFreePoolWithTag(P, 0);")
    a("}")
    a("")
    if has_pool2:
        a("/* POOL_FLAG_PAGED 0x100, POOL_FLAG_NON_PAGED_EXECUTE 0x80, POOL_FLAG_NON_PAGED 0x40. */")
        a("NOTAIL %svoid *ExAllocatePool2(unsigned long long Flags, unsigned long long "
          "NumberOfBytes, unsigned long Tag)" % dll("ExAllocatePool2"))
        a("{")
        a("    enum _POOL_TYPE PoolType;")
        a("    void *P;")
        a("    if (Flags & 0x100)")
        a("        PoolType = PagedPool;")
        a("    else if (Flags & 0x80)")
        a("        PoolType = NonPagedPoolExecute;")
        a("    else if (Flags & 0x40)")
        a("        PoolType = NonPagedPoolNx;")
        a("    else")
        a("        return 0;")
        a("    P = %s(PoolType, NumberOfBytes, Tag);" % ("ExAllocateHeapPool" if heap else "ExAllocatePoolWithTag"))
        a("    if (P && !(Flags & 2 /* POOL_FLAG_UNINITIALIZED */))")
        a("        KiZeroGlobal(P, NumberOfBytes);")
        a("    return P;")
        a("}")
        a("")
    a("/* System threads: KiStartSystemThread -> PspSystemThreadStartup -> the start routine. The")
    a("   simulator starts each work item on a processor's worker thread at KiStartSystemThread with")
    a("   ExpWorkerThread and the item, on a fresh kernel stack whose first return address is 0. */")
    a("struct _WORK_QUEUE_ITEM {")
    a("    struct _LIST_ENTRY List;")
    a("    void (*WorkerRoutine)(void *Parameter);")
    a("    void *Parameter;")
    a("};")
    a("")
    a("NOTAIL void ExpWorkerThread(struct _WORK_QUEUE_ITEM *WorkItem)")
    a("{")
    a("    WorkItem->WorkerRoutine(WorkItem->Parameter);")
    a("}")
    a("")
    a("NOTAIL void PspSystemThreadStartup(void (*StartRoutine)(void *), void *StartContext)")
    a("{")
    a("    StartRoutine(StartContext);")
    a("}")
    a("")
    a("NOTAIL void KiStartSystemThread(void (*StartRoutine)(void *), void *StartContext)")
    a("{")
    a("    PspSystemThreadStartup(StartRoutine, StartContext);")
    a("}")
    a("")


HEADER = """/*
 * GENERATED by testdata/nt/build.py from the Volatility 3 ISF %(isf)s
 * (real ntkrnlmp.pdb of Windows %(bs)s). Do not edit; rerun the script.
 *
 * Every struct below has the real build's size and member offsets (bitfields in their real
 * storage units). Members named __* are layout helpers, not real members. "stub" types have
 * the real size and their scalar and pointer members; other members are byte arrays.
 */
"""


def write_sources(fam, isf, plan, outdir):
    w = CWriter(plan)
    head = (HEADER % {"isf": fam.isf, "bs": fam.build_string}).splitlines()
    files = {}
    if fam.public:
        types = w.types_source(head + [
            "/* types.c: type definitions only, compiled with -g so the PDB gets full TPI types."
            " */", ""])
        files["types.c"] = types
        g = head + [
            "/* globals.c: globals and code, compiled with -g0, so the PDB gets S_PUB32 but no",
            "   S_GDATA32 for them, like Microsoft's public ntkrnlmp.pdb. */",
            "",
            '#include "types.c"',
            "",
        ] + w.globals_source() + [""] + w.code_source()
        files["globals.c"] = "\n".join(g) + "\n"
    else:
        types = w.types_source(head)
        files["nt.c"] = types + "\n" + "\n".join(
            ["/* Kernel globals (real C types; RVAs come from the linked image). */"]
            + w.globals_source() + [""] + w.code_source()) + "\n"
    for fn, text in files.items():
        with open(os.path.join(outdir, fn), "w", newline="\n") as f:
            f.write(text)
    return w, sorted(files)


# ---------------------------------------------------------------------------------------------
# PE and PDB (MSF) helpers


def parse_pe(data):
    if data[:2] != b"MZ":
        fail("not an MZ image")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        fail("no PE signature")
    machine, nsec, timestamp, _, _, optsize, chars = struct.unpack_from("<HHIIIHH", data, pe + 4)
    opt = pe + 24
    if struct.unpack_from("<H", data, opt)[0] != 0x20B:
        fail("not PE32+")
    entry = struct.unpack_from("<I", data, opt + 16)[0]
    image_base = struct.unpack_from("<Q", data, opt + 24)[0]
    size_of_image = struct.unpack_from("<I", data, opt + 56)[0]
    checksum = struct.unpack_from("<I", data, opt + 64)[0]
    ndirs = struct.unpack_from("<I", data, opt + 108)[0]
    dirs = [struct.unpack_from("<II", data, opt + 112 + 8 * i) for i in range(ndirs)]
    sections = []
    sh = opt + optsize
    for i in range(nsec):
        name, vsize, rva, rawsize, rawptr = struct.unpack_from("<8sIIII", data, sh + 40 * i)
        ch = struct.unpack_from("<I", data, sh + 40 * i + 36)[0]
        sections.append({"name": name.rstrip(b"\0").decode(), "rva": rva, "virtual_size": vsize,
                         "raw_size": rawsize, "file_offset": rawptr, "characteristics": ch})

    def rva2off(rva):
        for s in sections:
            if s["rva"] <= rva < s["rva"] + max(s["raw_size"], s["virtual_size"]):
                if rva - s["rva"] >= s["raw_size"]:
                    fail("RVA %#x not backed by file data" % rva)
                return s["file_offset"] + rva - s["rva"]
        fail("RVA %#x outside every section" % rva)

    def cstr(off):
        return data[off:data.index(b"\0", off)].decode()

    info = {"machine": machine, "timestamp": timestamp, "entry_rva": entry,
            "image_base": image_base, "size_of_image": size_of_image, "checksum": checksum,
            "characteristics": chars, "sections": sections, "exports": [], "imports": {},
            "dll_name": None, "rsds": None, "pdata_count": 0}
    if ndirs > 0 and dirs[0][0]:
        e = rva2off(dirs[0][0])
        name_rva, base, nfuncs, nnames, afuncs, anames, aords = struct.unpack_from(
            "<IIIIIII", data, e + 12)
        info["dll_name"] = cstr(rva2off(name_rva))
        for i in range(nnames):
            nm = cstr(rva2off(struct.unpack_from("<I", data, rva2off(anames) + 4 * i)[0]))
            ordi = struct.unpack_from("<H", data, rva2off(aords) + 2 * i)[0]
            frva = struct.unpack_from("<I", data, rva2off(afuncs) + 4 * ordi)[0]
            info["exports"].append({"name": nm, "rva": frva})
    if ndirs > 1 and dirs[1][0]:
        d = rva2off(dirs[1][0])
        while True:
            ilt, _, _, name_rva, iat = struct.unpack_from("<IIIII", data, d)
            if not name_rva:
                break
            dll = cstr(rva2off(name_rva))
            names = []
            t = rva2off(ilt or iat)
            while True:
                v = struct.unpack_from("<Q", data, t)[0]
                if not v:
                    break
                names.append(cstr(rva2off(v & 0x7FFFFFFF) + 2) if not v >> 63 else "#%d" % (
                    v & 0xFFFF))
                t += 8
            info["imports"][dll] = names
            d += 20
    if ndirs > 3 and dirs[3][0]:
        info["pdata_count"] = dirs[3][1] // 12
    if ndirs > 6 and dirs[6][0]:
        d = rva2off(dirs[6][0])
        for i in range(dirs[6][1] // 28):
            _, _, _, _, typ, size, _, ptr = struct.unpack_from("<IIHHIIII", data, d + 28 * i)
            if typ == 2 and data[ptr:ptr + 4] == b"RSDS":
                guid = data[ptr + 4:ptr + 20]
                age = struct.unpack_from("<I", data, ptr + 20)[0]
                info["rsds"] = {"file_offset": ptr, "guid": guid, "age": age,
                                "name": cstr(ptr + 24)}
    return info


def guid_bytes(guid_hex):
    """ISF GUID text (the symbol-server form) -> the 16 bytes in Windows byte order."""
    raw = bytes.fromhex(guid_hex)
    d1, d2, d3 = struct.unpack(">IHH", raw[:8])
    return struct.pack("<IHH", d1, d2, d3) + raw[8:]


def guid_text(b):
    d1, d2, d3 = struct.unpack_from("<IHH", b, 0)
    return "%08X-%04X-%04X-%s-%s" % (d1, d2, d3, b[8:10].hex().upper(), b[10:16].hex().upper())


def store_key(b, age):
    return guid_text(b).replace("-", "") + "%X" % age


def msf_streams(data):
    if not data.startswith(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0"):
        fail("not an MSF 7.00 file")
    bs, _, nblocks, dirbytes, _, blockmap = struct.unpack_from("<6I", data, 32)
    ndir = (dirbytes + bs - 1) // bs
    dirblocks = struct.unpack_from("<%dI" % ndir, data, blockmap * bs)
    directory = b"".join(data[b * bs:(b + 1) * bs] for b in dirblocks)[:dirbytes]
    n = struct.unpack_from("<I", directory, 0)[0]
    sizes = struct.unpack_from("<%dI" % n, directory, 4)
    pos = 4 + 4 * n
    streams = []
    for s in sizes:
        cnt = 0 if s == 0xFFFFFFFF else (s + bs - 1) // bs
        blocks = struct.unpack_from("<%dI" % cnt, directory, pos)
        pos += 4 * cnt
        streams.append((s, blocks))
    return bs, streams


def patch_identity(exe_path, pdb_path, guid, age):
    """Give the EXE (RSDS) and the PDB (info stream, DBI header) the real GUID and age."""
    exe = bytearray(read_bytes(exe_path))
    pdb = bytearray(read_bytes(pdb_path))
    pe = parse_pe(bytes(exe))
    rs = pe["rsds"]
    if rs is None:
        fail("%s has no RSDS record" % exe_path)
    old = rs["guid"]
    counts = (bytes(exe).count(old), bytes(pdb).count(old))
    if counts != (1, 1):
        fail("lld GUID occurs %d times in the EXE and %d in the PDB, expected once each"
             % counts)
    bs, streams = msf_streams(bytes(pdb))
    info = streams[1][1][0] * bs
    dbi = streams[3][1][0] * bs
    if bytes(pdb[info + 12:info + 28]) != old:
        fail("PDB info stream GUID does not match the EXE's RSDS")
    pdb[info + 8:info + 12] = struct.pack("<I", age)
    pdb[info + 12:info + 28] = guid
    if struct.unpack_from("<i", pdb, dbi)[0] != -1:
        fail("unexpected DBI stream header")
    pdb[dbi + 8:dbi + 12] = struct.pack("<I", age)
    off = rs["file_offset"]
    exe[off + 4:off + 20] = guid
    exe[off + 20:off + 24] = struct.pack("<I", age)
    write_bytes(exe_path, exe)
    write_bytes(pdb_path, pdb)
    return old


def check_identity(exe_path, pdb_path, guid, age):
    """llvm-pdbutil and llvm-readobj must both report the patched GUID and age."""
    want = "{%s}" % guid_text(guid)
    summ = run([PDBUTIL, "dump", "-summary", pdb_path])
    m_g = re.search(r"GUID: (\{[0-9A-F-]+\})", summ)
    m_a = re.search(r"Age: (\d+)", summ)
    if not m_g or m_g.group(1) != want or int(m_a.group(1)) != age:
        fail("llvm-pdbutil summary disagrees: %s" % summ)
    dbi = run([PDBUTIL, "dump", "-modules", pdb_path])  # parses the DBI stream
    if "Mod 0000" not in dbi:
        fail("llvm-pdbutil could not read the modules")
    ro = run([READOBJ, "--coff-debug-directory", exe_path])
    m_g = re.search(r"PDBGUID: (\{[0-9A-F-]+\})", ro)
    m_a = re.search(r"PDBAge: (\d+)", ro)
    m_n = re.search(r"PDBFileName: (\S+)", ro)
    if not m_g or m_g.group(1) != want or int(m_a.group(1)) != age:
        fail("llvm-readobj debug directory disagrees: %s" % ro)
    return {"pdbutil_guid": want, "pdbutil_age": age, "readobj_guid": m_g.group(1),
            "readobj_age": int(m_a.group(1)), "readobj_pdb": m_n.group(1)}


# ---------------------------------------------------------------------------------------------
# Map file and symbol records


MAP_LINE = re.compile(r"^\s*([0-9a-fA-F]{4}):([0-9a-fA-F]{8})\s+(\S+)\s+([0-9a-fA-F]{16})\s+"
                      r"(?:f\s+)?(\S+)\s*$")


def parse_map(text, image_base):
    syms = {}
    in_publics = False
    for line in text.splitlines():
        if "Publics by Value" in line:
            in_publics = True
            continue
        if line.strip().startswith("entry point at") or "Static symbols" in line:
            in_publics = False
        if not in_publics:
            continue
        m = MAP_LINE.match(line)
        if m:
            sec, off, name, va = int(m.group(1), 16), int(m.group(2), 16), m.group(3), int(
                m.group(4), 16)
            syms[name] = {"section": sec, "offset": off, "rva": va - image_base}
    if not syms:
        fail("no publics in the map file")
    return syms


SYM_REC = re.compile(r"^\s*\d+ \| (S_[A-Z0-9_]+) \[size = \d+\] `([^`]*)`")
SYM_ADDR = re.compile(r"addr = (\d{4}):(\d+)")  # llvm-pdbutil prints both in decimal


def parse_symbol_dump(text):
    """llvm-pdbutil dump -publics/-globals -> [(kind, name, section, offset, rest)]"""
    out = []
    cur = None
    for line in text.splitlines():
        m = SYM_REC.match(line)
        if m:
            cur = [m.group(1), m.group(2), None, None, ""]
            out.append(cur)
            continue
        if cur is not None:
            cur[4] += line.strip() + " "
            a = SYM_ADDR.search(line)
            if a:
                cur[2], cur[3] = int(a.group(1), 10), int(a.group(2), 10)
    return out


# ---------------------------------------------------------------------------------------------
# TPI check: the built PDB must have every emitted type with the ISF's sizes and offsets


TPI_REC = re.compile(r"^\s*0x([0-9A-F]+) \| (LF_[A-Z0-9_]+) \[size = \d+\](?: `(.*)`)?\s*$")
TPI_MEMBER = re.compile(r"^- LF_MEMBER \[name = `([^`]*)`, Type = 0x([0-9A-F]+)(?: \(.*\))?, "
                        r"offset = (\d+), attrs = \w+\]$")
TPI_ENUMERATE = re.compile(r"^- LF_ENUMERATE \[(\S+) = (-?\d+)\]$")
TPI_INDEX = re.compile(r"^- LF_INDEX \[continuation = 0x([0-9A-F]+)\]$")

SIMPLE_SIZES = {0x03: 0, 0x08: 4, 0x10: 1, 0x20: 1, 0x68: 1, 0x69: 1, 0x70: 1, 0x30: 1,
                0x11: 2, 0x21: 2, 0x71: 2, 0x72: 2, 0x7A: 2, 0x12: 4, 0x22: 4, 0x74: 4,
                0x75: 4, 0x40: 4, 0x7B: 4, 0x13: 8, 0x23: 8, 0x76: 8, 0x77: 8, 0x41: 8}


class Tpi:
    def __init__(self, text):
        self.recs = {}
        cur = None
        for line in text.splitlines():
            m = TPI_REC.match(line)
            if m:
                cur = {"kind": m.group(2), "name": m.group(3), "lines": []}
                self.recs[int(m.group(1), 16)] = cur
                continue
            if cur is not None and line.strip():
                cur["lines"].append(line.strip())
        self.defs = {}
        for idx, r in self.recs.items():
            if r["kind"] in ("LF_STRUCTURE", "LF_UNION", "LF_CLASS", "LF_ENUM"):
                txt = " ".join(r["lines"])
                r["forward"] = "forward ref" in txt
                m = re.search(r"field list: (0x[0-9A-F]+|<no type>)", txt)
                r["fieldlist"] = int(m.group(1), 16) if m and m.group(1) != "<no type>" else None
                m = re.search(r"sizeof (\d+)", txt)
                r["sizeof"] = int(m.group(1)) if m else None
                m = re.search(r"underlying type: 0x([0-9A-F]+)", txt)
                r["underlying"] = int(m.group(1), 16) if m else None
                if not r["forward"]:
                    if r["name"] in self.defs:
                        fail("type %s defined twice in the PDB" % r["name"])
                    self.defs[r["name"]] = idx
            elif r["kind"] == "LF_BITFIELD":
                m = re.search(r"type = 0x([0-9A-F]+).*bit offset = (\d+), # bits = (\d+)",
                              " ".join(r["lines"]))
                r["type"], r["pos"], r["len"] = int(m.group(1), 16), int(m.group(2)), int(
                    m.group(3))
            elif r["kind"] == "LF_POINTER":
                m = re.search(r"referent = 0x([0-9A-F]+).*kind = (\w+)", " ".join(r["lines"]))
                r["referent"], r["ptrkind"] = int(m.group(1), 16), m.group(2)
            elif r["kind"] == "LF_ARRAY":
                m = re.search(r"size: (\d+), index type: .*element type: 0x([0-9A-F]+)",
                              " ".join(r["lines"]))
                r["sizeof"], r["element"] = int(m.group(1)), int(m.group(2), 16)
            elif r["kind"] == "LF_MODIFIER":
                m = re.search(r"referent = 0x([0-9A-F]+)", " ".join(r["lines"]))
                r["referent"] = int(m.group(1), 16)
        self.index_splits = 0

    def resolve(self, idx):
        """Follow modifiers and forward refs to a definition."""
        for _ in range(16):
            if idx < 0x1000:
                return idx, None
            r = self.recs[idx]
            if r["kind"] == "LF_MODIFIER":
                idx = r["referent"]
                continue
            if r["kind"] in ("LF_STRUCTURE", "LF_UNION", "LF_CLASS", "LF_ENUM") and r["forward"]:
                d = self.defs.get(r["name"])
                if d is None:
                    return idx, r
                idx = d
                continue
            return idx, r
        fail("type chain too long at %#x" % idx)

    def size(self, idx):
        idx, r = self.resolve(idx)
        if r is None:
            if (idx >> 8) & 0xF:
                return 8
            return SIMPLE_SIZES[idx & 0xFF]
        k = r["kind"]
        if k == "LF_POINTER":
            return 8 if r["ptrkind"] == "ptr64" else 4
        if k in ("LF_ARRAY", "LF_STRUCTURE", "LF_UNION", "LF_CLASS"):
            return r["sizeof"]
        if k == "LF_ENUM":
            return self.size(r["underlying"])
        if k == "LF_BITFIELD":
            return self.size(r["type"])
        if k == "LF_PROCEDURE":
            return 0
        fail("no size for %s" % k)

    def fieldlist(self, idx):
        members, enumerators = [], []
        seen = set()
        while idx is not None:
            if idx in seen:
                fail("field list loop")
            seen.add(idx)
            r = self.recs[idx]
            if r["kind"] != "LF_FIELDLIST":
                fail("%#x is not a field list" % idx)
            nxt = None
            for line in r["lines"]:
                m = TPI_MEMBER.match(line)
                if m:
                    members.append((m.group(1), int(m.group(2), 16), int(m.group(3))))
                    continue
                m = TPI_ENUMERATE.match(line)
                if m:
                    enumerators.append((m.group(1), int(m.group(2))))
                    continue
                m = TPI_INDEX.match(line)
                if m:
                    nxt = int(m.group(1), 16)
                    self.index_splits += 1
                    continue
                if line.startswith("- "):
                    fail("unexpected field-list entry: %s" % line)
            idx = nxt
        return members, enumerators


def verify_types(tpi, isf, plan):
    """Compare every emitted type and enum in the PDB with the ISF. Returns counters."""
    nfields = nbits = 0
    for name in sorted(plan.emitted):
        t = isf.types[name]
        if name not in tpi.defs:
            fail("PDB lacks a definition of %s" % name)
        r = tpi.recs[tpi.defs[name]]
        want_kind = "LF_UNION" if t["kind"] == "union" else "LF_STRUCTURE"
        if r["kind"] != want_kind:
            fail("%s is %s in the PDB, %s in the ISF" % (name, r["kind"], t["kind"]))
        if r["sizeof"] != t["size"]:
            fail("%s: PDB size %d, ISF size %d" % (name, r["sizeof"], t["size"]))
        members, _ = tpi.fieldlist(r["fieldlist"])
        got = {}
        for mname, mtype, moff in members:
            if mname.startswith("__"):
                continue
            if mname in got:
                fail("%s.%s appears twice in the PDB" % (name, mname))
            got[mname] = (mtype, moff)
        extra = set(got) - set(t["fields"])
        if extra:
            fail("%s: PDB has members not in the ISF: %s" % (name, sorted(extra)))
        for fname, f in sorted(t["fields"].items()):
            if fname not in got:
                fail("%s.%s missing from the PDB" % (name, fname))
            mtype, moff = got[fname]
            ty = f["type"]
            where = "%s.%s" % (name, fname)
            if moff != f["offset"]:
                fail("%s: PDB offset %d, ISF offset %d" % (where, moff, f["offset"]))
            if ty["kind"] == "bitfield":
                _, br = tpi.resolve(mtype)
                if br is None or br["kind"] != "LF_BITFIELD":
                    fail("%s: not a bitfield in the PDB" % where)
                if (br["pos"], br["len"]) != (ty["bit_position"], ty["bit_length"]):
                    fail("%s: PDB bits %d:%d, ISF bits %d:%d" % (
                        where, br["pos"], br["len"], ty["bit_position"], ty["bit_length"]))
                if tpi.size(br["type"]) != isf.sizeof(ty["type"]):
                    fail("%s: storage unit of %d bytes, ISF %d" % (
                        where, tpi.size(br["type"]), isf.sizeof(ty["type"])))
                nbits += 1
            else:
                if tpi.size(mtype) != isf.sizeof(ty):
                    fail("%s: PDB size %d, ISF size %d" % (where, tpi.size(mtype),
                                                             isf.sizeof(ty)))
                opaque = plan.opaque.get((name, fname), False)
                idx, mr = tpi.resolve(mtype)
                if ty["kind"] in ("struct", "union") and not opaque:
                    if mr is None or mr["name"] != ty["name"]:
                        fail("%s: PDB type is not %s" % (where, ty["name"]))
                elif ty["kind"] == "pointer":
                    if not ((mr is None and (idx >> 8) & 0xF) or (mr and mr["kind"] ==
                                                                    "LF_POINTER")):
                        fail("%s: not a pointer in the PDB" % where)
                elif ty["kind"] == "array":
                    if mr is None or mr["kind"] != "LF_ARRAY":
                        fail("%s: not an array in the PDB" % where)
                    sub = ty["subtype"]
                    if sub["kind"] in ("struct", "union") and not opaque:
                        _, er = tpi.resolve(mr["element"])
                        if er is None or er["name"] != sub["name"]:
                            fail("%s: PDB element type is not %s" % (where, sub["name"]))
                elif ty["kind"] == "enum" and ty["name"] in plan.enums:
                    if mr is None or mr["kind"] != "LF_ENUM" or mr["name"] != ty["name"]:
                        fail("%s: PDB type is not enum %s" % (where, ty["name"]))
            nfields += 1
    nenum = 0
    for e in plan.enums:
        if e not in tpi.defs:
            fail("PDB lacks enum %s" % e)
        r = tpi.recs[tpi.defs[e]]
        if r["kind"] != "LF_ENUM":
            fail("%s is not an LF_ENUM" % e)
        _, enumerators = tpi.fieldlist(r["fieldlist"])
        if dict(enumerators) != isf.enums[e]["constants"] or len(enumerators) != len(
                isf.enums[e]["constants"]):
            fail("enum %s: PDB enumerators differ from the ISF" % e)
        nenum += len(enumerators)
    return {"types": len(plan.emitted), "fields": nfields, "bitfields": nbits,
            "enums": len(plan.enums), "enumerators": nenum, "lf_index_splits": tpi.index_splits}


# ---------------------------------------------------------------------------------------------
# Manifest


def field_manifest(isf, plan, tname, fname, f):
    ty = f["type"]
    k = ty["kind"]
    out = {"offset": f["offset"], "size": isf.sizeof(ty)}

    def tname_of(t):
        kk = t["kind"]
        if kk in ("struct", "union", "class"):
            return t["name"]
        if kk == "pointer":
            return "pointer"
        if kk == "base":
            return t["name"]
        if kk == "enum":
            return isf.enums[t["name"]]["base"]
        if kk == "array":
            return "array"
        return kk

    if k == "bitfield":
        out["bit_position"] = ty["bit_position"]
        out["bit_length"] = ty["bit_length"]
        out["type"] = ty["type"]["name"]
    elif k == "array":
        out["type"] = tname_of(ty["subtype"])
        out["count"] = ty["count"]
        out["element_size"] = isf.sizeof(ty["subtype"])
        if ty["subtype"]["kind"] == "enum":
            out["enum"] = ty["subtype"]["name"]
        if ty["subtype"]["kind"] == "pointer":
            out["pointee"] = pointee_name(ty["subtype"])
    else:
        out["type"] = tname_of(ty)
        if k == "pointer":
            out["pointee"] = pointee_name(ty)
        if k == "enum":
            out["enum"] = ty["name"]
    if plan.opaque.get((tname, fname)):
        out["opaque"] = True
    return out


def pointee_name(ty):
    s = ty["subtype"]
    if s["kind"] in ("struct", "union", "class", "base", "enum"):
        return s["name"]
    return s["kind"]


def build_manifest(fam, isf, plan, cw, pe, syms, guid, age, pdb_has_gdata, sym_sections):
    types = {}
    for n in sorted(plan.emitted):
        t = isf.types[n]
        entry = {"size": t["size"]}
        if t["kind"] == "union":
            entry["kind"] = "union"
        if n in plan.stubs:
            entry["stub"] = True
        entry["fields"] = dict(
            (fname, field_manifest(isf, plan, n, fname, f)) for fname, f in sorted_fields(t))
        types[n] = entry
    symbols = {}
    for g in plan.globals:
        name, kind, target, exported, count = g
        s = {"rva": syms[name]["rva"], "size": cw.global_size(g), "kind": kind}
        if kind == "pointer":
            s["pointee"] = target or "void"
        if kind == "pointer_array":
            s["count"] = count
            s["pointee"] = target
        if name == "ExpHotTagArray":
            s["count"] = count
        if kind in ("struct", "list_entry"):
            s["type"] = target
        if name == "KdDebuggerDataBlock":
            s["type_in_pdb"] = False
        s["section"] = sym_sections[name]
        if exported:
            s["exported"] = True
        symbols[name] = s
    for fn, exported, section in plan.functions:
        s = {"rva": syms[fn]["rva"], "size": 0, "kind": "function", "section": section}
        if exported:
            s["exported"] = True
        symbols[fn] = s
    image = {"file": "ntoskrnl.exe", "image_base": pe["image_base"],
             "size_of_image": pe["size_of_image"], "timestamp": pe["timestamp"],
             "entry_rva": pe["entry_rva"],
             "sections": [dict((k, s[k]) for k in ("name", "rva", "virtual_size", "raw_size",
                                                    "file_offset", "characteristics"))
                          for s in pe["sections"]],
             "exports": sorted(pe["exports"], key=lambda e: e["name"]),
             "rsds_file_offset": pe["rsds"]["file_offset"]}
    return {
        "family": fam.name,
        "build": fam.build,
        "build_string": fam.build_string,
        "isf": fam.isf,
        "pdb": {"file": "ntkrnlmp.pdb", "name": "ntkrnlmp.pdb", "guid": guid_text(guid),
                "age": age, "store_key": store_key(guid, age),
                "has_global_data_records": pdb_has_gdata},
        "image": image,
        "symbols": symbols,
        "types": types,
        "enums": dict((e, dict(sorted(isf.enums[e]["constants"].items(),
                                      key=lambda kv: (kv[1], kv[0]))))
                      for e in plan.enums),
    }


def json_text(obj, indent=0):
    """JSON with one line per flat object/array (a field, a section, a symbol)."""
    def flat(v):
        return not isinstance(v, (dict, list)) or all(
            not isinstance(x, (dict, list)) for x in (v.values() if isinstance(v, dict) else v))
    if flat(obj):
        return json.dumps(obj, separators=(", ", ": "))
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        items = ["%s%s: %s" % (pad, json.dumps(k), json_text(v, indent + 1))
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    items = [pad + json_text(v, indent + 1) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"


def write_json(path, obj):
    text = json_text(obj) + "\n"
    if json.loads(text) != obj:
        fail("JSON writer round trip failed for %s" % path)
    with open(path, "w", newline="\n") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# One nt family


def build_family(fam, isf_dir, log):
    isf_path = os.path.join(isf_dir, fam.isf + ".json.xz")
    if not os.path.exists(isf_path):
        fail("missing ISF %s" % isf_path)
    isf = Isf(isf_path)
    meta = isf.pdb
    if "%s-%d" % (meta["GUID"], meta["age"]) != fam.isf:
        fail("ISF metadata %s-%s does not match %s" % (meta["GUID"], meta["age"], fam.isf))
    if meta["database"] != "ntkrnlmp.pdb" or meta["machine_type"] != 0x8664:
        fail("ISF %s is not an x64 ntkrnlmp.pdb" % fam.isf)
    guid, age = guid_bytes(meta["GUID"]), meta["age"]
    plan = Plan(isf, fam)
    outdir = os.path.join(HERE, fam.name)
    os.makedirs(outdir, exist_ok=True)
    cw, sources = write_sources(fam, isf, plan, outdir)

    with workdir("nt-" + fam.name) as tmp:
        for s in sources:
            shutil.copy(os.path.join(outdir, s), tmp)
        cdir = ["-fdebug-compilation-dir=%s\\nt\\%s" % (FAKE_SRC_ROOT, fam.name)]
        if fam.public:
            run([CLANG] + CFLAGS_COMMON + CFLAGS_DEBUG + cdir + ["-c", "types.c", "-o",
                                                               "types.obj"], cwd=tmp)
            run([CLANG] + CFLAGS_COMMON + CFLAGS_NODEBUG + cdir + ["-c", "globals.c", "-o",
                                                                 "globals.obj"], cwd=tmp)
            objs = ["types.obj", "globals.obj"]
        else:
            run([CLANG] + CFLAGS_COMMON + CFLAGS_DEBUG + cdir + ["-c", "nt.c", "-o", "nt.obj"],
                cwd=tmp)
            objs = ["nt.obj"]
        run([LLD, "/DRIVER", "/SUBSYSTEM:NATIVE", "/NODEFAULTLIB", "/DEBUG",
             "/PDB:ntkrnlmp.pdb", "/PDBALTPATH:ntkrnlmp.pdb", "/OUT:ntoskrnl.exe",
             "/MACHINE:X64", "/Brepro", "/MAP:ntoskrnl.map", "/ENTRY:KiSystemStartup",
             "/NOIMPLIB", "/PDBSOURCEPATH:%s\\nt\\%s" % (FAKE_SRC_ROOT, fam.name)] + objs,
            cwd=tmp)
        exe = os.path.join(tmp, "ntoskrnl.exe")
        pdb = os.path.join(tmp, "ntkrnlmp.pdb")
        lld_guid = patch_identity(exe, pdb, guid, age)
        ident = check_identity(exe, pdb, guid, age)
        pe = parse_pe(read_bytes(exe))
        mapsyms = parse_map(read_bytes(os.path.join(tmp, "ntoskrnl.map")).decode(),
                            pe["image_base"])

        tpi = Tpi(run([PDBUTIL, "dump", "-types", pdb]))
        # Symbols: map file vs S_PUB32 (+ section RVAs), and S_GDATA32 presence and type size.
        pubs = parse_symbol_dump(run([PDBUTIL, "dump", "-publics", pdb]))
        glob = parse_symbol_dump(run([PDBUTIL, "dump", "-globals", pdb]))
        pub = dict((r[1], r) for r in pubs if r[0] == "S_PUB32")
        gdata = dict((r[1], r) for r in glob if r[0] == "S_GDATA32")
        secs = pe["sections"]
        wanted = [g[0] for g in plan.globals] + [f[0] for f in plan.functions]
        sym_sections = {}
        for name in wanted:
            if name not in mapsyms:
                fail("%s: %s missing from the map file" % (fam.name, name))
            if name not in pub:
                fail("%s: no S_PUB32 for %s" % (fam.name, name))
            p = pub[name]
            rva = secs[p[2] - 1]["rva"] + p[3]
            if rva != mapsyms[name]["rva"]:
                fail("%s: %s at RVA %#x in the publics, %#x in the map" % (
                    fam.name, name, rva, mapsyms[name]["rva"]))
            sec = secs[p[2] - 1]["name"]
            sym_sections[name] = sec
            is_fn = "function" in p[4]
            if name in plan.global_names:
                if sec != ".data" or is_fn:
                    fail("%s: global %s is in %s" % (fam.name, name, sec))
                if fam.public:
                    if name in gdata:
                        fail("%s: public variant has S_GDATA32 for %s" % (fam.name, name))
                else:
                    g = gdata.get(name)
                    if g is None or (g[2], g[3]) != (p[2], p[3]):
                        fail("%s: S_GDATA32 for %s missing or misplaced" % (fam.name, name))
                    m = re.search(r"type = 0x([0-9A-F]+)", g[4])
                    decl = [x for x in plan.globals if x[0] == name][0]
                    if not m or tpi.size(int(m.group(1), 16)) != cw.global_size(decl):
                        fail("%s: S_GDATA32 type of %s has the wrong size" % (fam.name, name))
            else:
                if not is_fn:
                    fail("%s: %s is not flagged as a function in S_PUB32" % (fam.name, name))
                want_sec = [f[2] for f in plan.functions if f[0] == name][0]
                if sec != want_sec:
                    fail("%s: %s is in %s, expected %s" % (fam.name, name, sec, want_sec))
        if fam.public and gdata:
            fail("%s: public variant has S_GDATA32 records: %s" % (fam.name, sorted(gdata)[:5]))
        exported = sorted(e["name"] for e in pe["exports"])
        want_exp = sorted([g[0] for g in plan.globals if g[3]] +
                          [f[0] for f in plan.functions if f[1]])
        if exported != want_exp:
            fail("%s: exports %s, expected %s" % (fam.name, exported, want_exp))
        if pe["dll_name"] != "ntoskrnl.exe":
            fail("%s: export table names %r" % (fam.name, pe["dll_name"]))
        names = [s["name"] for s in secs]
        for s in (".text", ".rdata", ".data", ".pdata", "POOLCODE"):
            if s not in names:
                fail("%s: image has no %s section" % (fam.name, s))
        if pe["rsds"]["name"] != "ntkrnlmp.pdb":
            fail("%s: RSDS names %r" % (fam.name, pe["rsds"]["name"]))

        # Types: sizes and every member offset against the ISF.
        counts = verify_types(tpi, isf, plan)

        for f in ("ntoskrnl.exe", "ntkrnlmp.pdb"):
            shutil.copy(os.path.join(tmp, f), os.path.join(outdir, f))

    manifest = build_manifest(fam, isf, plan, cw, pe, mapsyms, guid, age, not fam.public,
                              sym_sections)
    write_json(os.path.join(outdir, "layout.json"), manifest)
    log("%-20s %s  types %d (%d stubs), fields %d (bitfields %d), enums %d/%d, LF_INDEX %d" % (
        fam.name, ident["pdbutil_guid"], counts["types"], len(plan.stubs), counts["fields"],
        counts["bitfields"], counts["enums"], counts["enumerators"],
        counts["lf_index_splits"]))
    log("%-20s exe %d B, pdb %d B, %d globals, %d functions, %d .pdata entries, "
        "lld GUID %s replaced; %s" % (
            "", os.path.getsize(os.path.join(outdir, "ntoskrnl.exe")),
            os.path.getsize(os.path.join(outdir, "ntkrnlmp.pdb")), len(plan.globals),
            len(plan.functions), pe["pdata_count"], guid_text(lld_guid),
            "publics only (no S_GDATA32)" if fam.public else "S_PUB32 + S_GDATA32"))
    return manifest


# ---------------------------------------------------------------------------------------------
# Drivers


DRIVERS = [
    {"name": "leakydrv", "tags": ["Leak", "LkBf"],
     "imports": ["DbgBreakPoint", "DbgPrint", "ExAllocatePoolWithTag", "ExFreePoolWithTag"],
     "routine": "LkWorkerRoutine",
     "summary": "leaks one nonpaged 'Leak' record per request, queues and completes 'Leak' work "
                "items, bursts big 'Leak' cache buffers, keeps an 'LkBf' buffer"},
    {"name": "netsim", "tags": ["NSbf", "NScx", "NSrx"],
     "imports": ["ExAllocatePoolWithTag", "ExFreePoolWithTag"],
     "routine": "NsWorkerRoutine",
     "summary": "simulated NIC: context 'NScx', receive buffers 'NSrx', packet buffers 'NSbf'"},
    {"name": "fsfilt", "tags": ["FsFl", "FsCt"],
     "imports": ["ExAllocatePoolWithQuotaTag", "ExAllocatePoolWithTag", "ExFreePoolWithTag",
                 "KeBugCheckEx"],
     "routine": "FsWorkerRoutine",
     "summary": "file-system filter: per-file 'FsFl' contexts, one 'FsCt' control block"},
]

# Imports every driver can bind on every build (ntoskrnl.exe exports them in every family).
NT_IMPORTS = ["DbgBreakPoint", "DbgPrint", "ExAllocatePoolWithQuotaTag", "ExAllocatePoolWithTag",
              "ExFreePool", "ExFreePoolWithTag", "KeBugCheckEx"]

# The network pair, loaded only by scenarios that ask for it (Scenario::ndis) and recorded in
# ndis.json: a synthetic ndis.sys whose exported allocator calls nt's pool for its caller, as
# NDIS does, and a miniport that allocates through it (and through nt once).
NDIS_DRIVERS = [
    {"name": "ndis", "tags": [],
     "imports": ["ExAllocatePoolWithTag", "ExFreePoolWithTag"],
     "exports": ["NdisAllocateMemoryWithTagPriority", "NdisFreeMemoryWithTagPriority"],
     "wrapper": True,
     "routine": "DriverEntry",
     "summary": "NDIS's tagged allocator: NdisAllocateMemoryWithTagPriority and "
                "NdisFreeMemoryWithTagPriority call nt's pool for the miniport that calls them",
     "runs": "The simulated target (crates/kit/src/run/) runs this code when the miniport\n"
             " * nicmini.sys calls it."},
    {"name": "nicmini", "tags": ["NmRx", "NmCx"],
     "imports": ["ExAllocatePoolWithTag"],
     "ndis_imports": ["NdisAllocateMemoryWithTagPriority", "NdisFreeMemoryWithTagPriority"],
     "routine": "NmWorkerRoutine",
     "summary": "NDIS miniport: receive buffers 'NmRx' through NDIS's allocator, a context "
                "'NmCx' from nt's"},
]

# The KMDF pair, loaded only by scenarios that ask for it (Scenario::kmdf) and recorded in
# kmdf.json: a synthetic framework, Wdf01000.sys, whose function table holds WdfMemoryCreate (index
# 192) and WdfObjectDelete (208) at the indexes KMDF's wdffuncenum.h gives them, and which also
# allocates with its client's tag for work of its own (a request it dispatches); and a client,
# kmdfdrv.sys, bound to it as WDFLDR.SYS binds a KMDF driver (a WDF_BIND_INFO naming
# L"KmdfLibrary" and the global WdfFunctions_01015), which calls the framework through the table.
# The simulated target does the binding (crates/kit/src/machine/images.rs): the client's
# WdfFunctions_01015 and WdfDriverGlobals, and the framework's FxClient (the client's globals, its
# DriverPoolTag and the EvtIoRead callback WdfIoQueueCreate would have registered).
KMDF_DRIVERS = [
    {"name": "Wdf01000", "tags": [],
     "imports": ["ExAllocatePoolWithTag", "ExFreePoolWithTag"],
     "routine": "FxIoDispatchWorker",
     "framework": True,
     "data": ["FxFunctionTable", "FxClient"],
     # offsetof(struct FX_CLIENT, Globals.DriverTag) and (..., EvtIoRead): the C asserts them.
     "offsets": {"driver_tag": 0xC, "evt_io_read": 0x38},
     "summary": "KMDF's framework: WdfMemoryCreate and WdfObjectDelete through its function "
                "table, and read requests it dispatches to its client with the client's tag",
     "runs": "The simulated target (crates/kit/src/run/) runs this code: it queues\n"
             " * FxIoDispatchWorker as a work item (a read request arrives, or the oldest completes),\n"
             " * and kmdfdrv.sys calls it through the function table."},
    {"name": "kmdfdrv", "tags": ["KmBf"],
     "imports": [],
     "wdfldr_imports": ["WdfVersionBind"],
     "routine": "KmWorkerRoutine",
     "data": ["WdfFunctions_01015", "WdfDriverGlobals"],
     "driver_tag": "KmDr",
     "callbacks": {"evt_io_read": "KmEvtIoRead"},
     "summary": "KMDF driver: buffers 'KmBf' through WdfMemoryCreate, and buffers for each read "
                "request with its DriverPoolTag 'KmDr' (PoolTag 0), freed by WdfObjectDelete"},
]

DRIVER_PRELUDE = """/*
 * GENERATED by testdata/nt/build.py. Do not edit; rerun the script.
 * A small test driver for pooldump: %(summary)s.
 * Tags are written the Windows way, as multi-character constants: 'kaeL' is the ULONG
 * 0x6B61654C, stored in memory as the bytes "Leak".
 *
 * %(runs)s Functions are NOTAIL (no sibling-call
 * optimisation) so their frames appear in stacks, except where a tail call is wanted.
 */

enum _POOL_TYPE { NonPagedPool = 0, PagedPool = 1, NonPagedPoolNx = 512 };

struct _LIST_ENTRY { struct _LIST_ENTRY *Flink, *Blink; };

#define NOTAIL __attribute__((noinline, disable_tail_calls))
"""

CHKSTK = r'''
/* __chkstk, which the compiler calls before a dynamic stack allocation (alloca): touch each page
   of the new stack area from the top down, as the CRT routine a real driver links does. RAX holds
   the byte count and survives; R10 and R11 are scratch. */
__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".globl __chkstk\n"
    ".def __chkstk; .scl 2; .type 32; .endef\n"
    ".p2align 4\n"
    "__chkstk:\n"
    ".seh_proc __chkstk\n"
    "    push r10\n"
    "    .seh_pushreg r10\n"
    "    push r11\n"
    "    .seh_pushreg r11\n"
    "    .seh_endprologue\n"
    "    lea r10, [rsp + 0x18]\n"
    "    mov r11, rax\n"
    "1:\n"
    "    cmp r11, 0x1000\n"
    "    jb 2f\n"
    "    sub r10, 0x1000\n"
    "    test byte ptr [r10], 0\n"
    "    sub r11, 0x1000\n"
    "    jmp 1b\n"
    "2:\n"
    "    pop r11\n"
    "    pop r10\n"
    "    ret\n"
    ".seh_endproc\n"
    ".att_syntax\n");
'''

DRIVER_BODIES = {
    "leakydrv": r"""
__declspec(dllimport) void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType,
                                                  unsigned long long NumberOfBytes,
                                                  unsigned long Tag);
__declspec(dllimport) void ExFreePoolWithTag(void *P, unsigned long Tag);
__declspec(dllimport) unsigned long DbgPrint(const char *Format, ...);
__declspec(dllimport) void DbgBreakPoint(void);

struct LEAK_RECORD {
    struct _LIST_ENTRY Links;
    unsigned long long Sequence;
    unsigned char Payload[0x100];
};

/* What the simulated target passes as the work item's parameter. */
struct LK_REQUEST {
    unsigned long Kind;      /* 0 process, 1 queue, 2 complete, 3 buffer, 4 burst, 5 trim,
                                6 self-check, 7 touch Context */
    unsigned long Flags;     /* queue: 1 tag 'LkBf' instead of 'Leak', 2 paged pool */
    unsigned long long Length;
    void *Context;
};

struct LK_WORK {
    struct _LIST_ENTRY Links;
    struct LK_REQUEST Request;
    unsigned long long Queued;
    unsigned char Name[0x20];
};

#define LK_CACHE_SLOTS 32
#define LK_CACHE_KEEP 4

struct _LIST_ENTRY LeakList = { &LeakList, &LeakList };
struct _LIST_ENTRY PendingWork = { &PendingWork, &PendingWork };
void *LeakBuffer;
void *LkCache[LK_CACHE_SLOTS];
unsigned long long LkCacheCount;
unsigned long long LeakSequence, WorkSequence, PendingCount;

/* The bug pooldump is meant to find: records are linked but never unlinked or freed. */
NOTAIL int LeakOneRecord(unsigned long long Sequence)
{
    struct LEAK_RECORD *Record = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*Record),
                                                       'kaeL');
    if (!Record)
        return 0;
    Record->Sequence = Sequence;
    Record->Links.Flink = LeakList.Flink;
    Record->Links.Blink = &LeakList;
    LeakList.Flink->Blink = &Record->Links;
    LeakList.Flink = &Record->Links;
    return 1;
}

/* A big frame (UWOP_ALLOC_LARGE): the request is copied into a scratch buffer first. */
NOTAIL int LkProcessRequest(struct LK_REQUEST *Request)
{
    volatile unsigned char Scratch[0x900];
    unsigned long long i;
    for (i = 0; i < Request->Length && i < sizeof(Scratch); i++)
        Scratch[i] = (unsigned char)(Request->Kind + i);
    return LeakOneRecord(++LeakSequence + Scratch[0]);
}

/* A frame pointer (UWOP_SET_FPREG) and __chkstk: the name buffer is sized at run time. The tag
   is chosen at run time too, so it reaches R8 from a register, not as an immediate operand of
   the instruction that loads R8. */
NOTAIL struct LK_WORK *LkQueueWork(struct LK_REQUEST *Request, unsigned long NameLength)
{
    unsigned char *Name = __builtin_alloca(NameLength + 1);
    unsigned long Tag = (Request->Flags & 1) ? 'fBkL' : 'kaeL';
    struct LK_WORK *Work;
    unsigned long i;
    for (i = 0; i < NameLength; i++)
        Name[i] = 'a' + (i % 26);
    Work = ExAllocatePoolWithTag((Request->Flags & 2) ? PagedPool : NonPagedPoolNx,
                                 sizeof(*Work), Tag);
    if (!Work)
        return 0;
    Work->Request = *Request;
    Work->Queued = ++WorkSequence;
    for (i = 0; i < NameLength && i < sizeof(Work->Name); i++)
        Work->Name[i] = Name[i];
    Work->Links.Flink = &PendingWork;
    Work->Links.Blink = PendingWork.Blink;
    PendingWork.Blink->Flink = &Work->Links;
    PendingWork.Blink = &Work->Links;
    PendingCount++;
    return Work;
}

/* Not NOTAIL: ExFreePoolWithTag is the last call, so the compiler makes it a jump through the
   import table and this function's frame is gone by the time the pool sees the free. */
__attribute__((noinline)) void LkCompleteWork(void)
{
    struct _LIST_ENTRY *Entry = PendingWork.Flink;
    struct LK_WORK *Work;
    if (Entry == &PendingWork)
        return;
    Work = (struct LK_WORK *)Entry;
    Entry->Blink->Flink = Entry->Flink;
    Entry->Flink->Blink = Entry->Blink;
    PendingCount--;
    ExFreePoolWithTag(Work, (Work->Request.Flags & 1) ? 'fBkL' : 'kaeL');
}

/* The size survives the free in a callee-saved register until the allocation. */
NOTAIL int AllocateBuffer(unsigned long long Size)
{
    if (LeakBuffer)
        ExFreePoolWithTag(LeakBuffer, 'fBkL');
    LeakBuffer = ExAllocatePoolWithTag(PagedPool, Size, 'fBkL');
    return LeakBuffer != 0;
}

/* LkBurstAllocate(Count) is in assembly below, with chained unwind information: the loop that
   allocates lives in a separate fragment (.text$lk) whose RUNTIME_FUNCTION chains back to the
   function's own, as MSVC's hot/cold splitting emits it. */
unsigned long long LkBurstAllocate(unsigned long long Count);

NOTAIL void LkTrimCache(void)
{
    while (LkCacheCount > LK_CACHE_KEEP) {
        LkCacheCount--;
        ExFreePoolWithTag(LkCache[LkCacheCount], 'kaeL');
        LkCache[LkCacheCount] = 0;
    }
}

NOTAIL void LkSelfCheck(unsigned long long Limit)
{
    DbgPrint("leakydrv: %u work items pending, %u records leaked\n",
             (unsigned)PendingCount, (unsigned)LeakSequence);
    if (PendingCount >= Limit)
        DbgBreakPoint();
}

/* Writes through whatever the request points at: a bad pointer is a page fault in a driver. */
NOTAIL void LkTouch(struct LK_REQUEST *Request)
{
    *(volatile unsigned long long *)Request->Context = Request->Length;
}

NOTAIL void LkWorkerRoutine(void *Context)
{
    struct LK_REQUEST *Request = Context;
    switch (Request->Kind) {
    case 0: LkProcessRequest(Request); break;
    case 1: LkQueueWork(Request, (unsigned long)Request->Length); break;
    case 2: LkCompleteWork(); break;
    case 3: AllocateBuffer(Request->Length); break;
    case 4: LkBurstAllocate(Request->Length); break;
    case 5: LkTrimCache(); break;
    case 6: LkSelfCheck(Request->Length); break;
    case 7: LkTouch(Request); break;
    }
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    int i;
    if (!AllocateBuffer(0x2000))
        return (long)0xC000009A; /* STATUS_INSUFFICIENT_RESOURCES */
    for (i = 0; i < 16; i++)
        LeakOneRecord(++LeakSequence);
    return 0;
}

/*
 * unsigned long long LkBurstAllocate(unsigned long long Count)
 * {
 *     unsigned long long Done = 0;
 *     while (Count-- && LkCacheCount < LK_CACHE_SLOTS) {      -- in the chained fragment
 *         void *P = ExAllocatePoolWithTag(NonPagedPoolNx, 0x1800, 'kaeL');
 *         if (!P) break;
 *         LkCache[LkCacheCount++] = P; Done++;
 *     }
 *     return Done;
 * }
 */
__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".globl LkBurstAllocate\n"
    ".def LkBurstAllocate; .scl 2; .type 32; .endef\n"
    ".p2align 4\n"
    "LkBurstAllocate:\n"
    "    push rbx\n"
    "    push rsi\n"
    "    push rdi\n"
    "    sub rsp, 0x20\n"
    "LkBurstAllocate$prolog_end:\n"
    "    mov rsi, rcx\n"
    "    xor edi, edi\n"
    "    test rsi, rsi\n"
    "    jnz LkBurstAllocate$loop\n"
    "LkBurstAllocate$done:\n"
    "    mov rax, rdi\n"
    "    add rsp, 0x20\n"
    "    pop rdi\n"
    "    pop rsi\n"
    "    pop rbx\n"
    "    ret\n"
    "LkBurstAllocate$end:\n"
    ".section .text$lk,\"xr\"\n"
    ".p2align 4\n"
    "LkBurstAllocate$loop:\n"
    "    cmp qword ptr [rip + LkCacheCount], 32\n"
    "    jae LkBurstAllocate$exit\n"
    "    mov ecx, 0x200\n"
    "    mov edx, 0x1800\n"
    "    mov r8d, 0x6B61654C\n"
    "    call qword ptr [rip + __imp_ExAllocatePoolWithTag]\n"
    "    test rax, rax\n"
    "    jz LkBurstAllocate$exit\n"
    "    mov rbx, qword ptr [rip + LkCacheCount]\n"
    "    lea rcx, [rip + LkCache]\n"
    "    mov qword ptr [rcx + 8*rbx], rax\n"
    "    inc rbx\n"
    "    mov qword ptr [rip + LkCacheCount], rbx\n"
    "    inc rdi\n"
    "    dec rsi\n"
    "    jnz LkBurstAllocate$loop\n"
    "LkBurstAllocate$exit:\n"
    "    jmp LkBurstAllocate$done\n"
    "LkBurstAllocate$loop_end:\n"
    /* UNWIND_INFO: version 1, prolog 7 bytes, 4 codes (ALLOC_SMALL 0x20 at 7, PUSH_NONVOL RDI
       at 3, RSI at 2, RBX at 1); the fragment's: version 1 with UNW_FLAG_CHAININFO, no codes,
       then the RUNTIME_FUNCTION of the function it belongs to. */
    ".section .xdata,\"dr\"\n"
    ".p2align 2\n"
    "LkBurstAllocate$xdata:\n"
    "    .byte 0x01, 0x07, 0x04, 0x00\n"
    "    .byte 0x07, 0x32, 0x03, 0x70, 0x02, 0x60, 0x01, 0x30\n"
    "LkBurstAllocate$loop$xdata:\n"
    "    .byte 0x21, 0x00, 0x00, 0x00\n"
    "    .rva LkBurstAllocate, LkBurstAllocate$end, LkBurstAllocate$xdata\n"
    ".section .pdata,\"dr\"\n"
    ".p2align 2\n"
    "    .rva LkBurstAllocate, LkBurstAllocate$end, LkBurstAllocate$xdata\n"
    "    .rva LkBurstAllocate$loop, LkBurstAllocate$loop_end, LkBurstAllocate$loop$xdata\n"
    ".text\n"
    ".att_syntax\n");
""" + CHKSTK,
    "netsim": r"""
/* Declared without dllimport: every call goes to a linker-made thunk in .text
   (jmp [__imp_ExAllocatePoolWithTag]), the other way drivers reach the import table. */
void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long NumberOfBytes,
                            unsigned long Tag);
void ExFreePoolWithTag(void *P, unsigned long Tag);

struct NS_CONTEXT {
    struct _LIST_ENTRY RxQueue;
    void *PacketBuffer;
    unsigned long long RxCount;
};

struct NS_RX {
    struct _LIST_ENTRY Links;
    unsigned long Length;
    unsigned char Data[0x5EE];
};

struct NS_REQUEST {
    unsigned long Kind;      /* 0 receive, 1 complete the oldest, 2 packet buffer */
    unsigned long Flags;
    unsigned long long Length;
    void *Context;
};

struct NS_CONTEXT *NsContext;

NOTAIL struct NS_RX *NsReceive(unsigned long Length)
{
    struct NS_RX *Rx = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*Rx), 'xrSN');
    if (!Rx)
        return 0;
    Rx->Length = Length;
    Rx->Links.Flink = &NsContext->RxQueue;
    Rx->Links.Blink = NsContext->RxQueue.Blink;
    NsContext->RxQueue.Blink->Flink = &Rx->Links;
    NsContext->RxQueue.Blink = &Rx->Links;
    NsContext->RxCount++;
    return Rx;
}

NOTAIL void NsComplete(struct NS_RX *Rx)
{
    Rx->Links.Blink->Flink = Rx->Links.Flink;
    Rx->Links.Flink->Blink = Rx->Links.Blink;
    NsContext->RxCount--;
    ExFreePoolWithTag(Rx, 'xrSN');
}

NOTAIL int NsStart(void)
{
    if (NsContext)
        return 1;
    NsContext = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*NsContext), 'xcSN');
    if (!NsContext)
        return 0;
    NsContext->RxQueue.Flink = NsContext->RxQueue.Blink = &NsContext->RxQueue;
    NsContext->RxCount = 0;
    NsContext->PacketBuffer = 0;
    return 1;
}

NOTAIL void NsWorkerRoutine(void *Context)
{
    struct NS_REQUEST *Request = Context;
    if (!NsStart())
        return;
    switch (Request->Kind) {
    case 0:
        NsReceive((unsigned long)Request->Length);
        break;
    case 1:
        if (NsContext->RxQueue.Flink != &NsContext->RxQueue)
            NsComplete((struct NS_RX *)NsContext->RxQueue.Flink);
        break;
    case 2:
        if (NsContext->PacketBuffer)
            ExFreePoolWithTag(NsContext->PacketBuffer, 'fbSN');
        NsContext->PacketBuffer = ExAllocatePoolWithTag(NonPagedPool, Request->Length, 'fbSN');
        break;
    }
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    struct NS_RX *Rx;
    if (!NsStart())
        return (long)0xC000009A;
    NsContext->PacketBuffer = ExAllocatePoolWithTag(NonPagedPool, 0x10000, 'fbSN');
    Rx = NsReceive(60);
    if (Rx)
        NsComplete(Rx);
    NsReceive(1514); /* never completed */
    return 0;
}
""",
    "fsfilt": r"""
__declspec(dllimport) void *ExAllocatePoolWithQuotaTag(enum _POOL_TYPE PoolType,
                                                       unsigned long long NumberOfBytes,
                                                       unsigned long Tag);
__declspec(dllimport) void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType,
                                                  unsigned long long NumberOfBytes,
                                                  unsigned long Tag);
__declspec(dllimport) void ExFreePoolWithTag(void *P, unsigned long Tag);
__declspec(dllimport) __declspec(noreturn) void KeBugCheckEx(unsigned long BugCheckCode,
                                                             unsigned long long P1,
                                                             unsigned long long P2,
                                                             unsigned long long P3,
                                                             unsigned long long P4);

struct FS_FILE_CONTEXT {
    struct _LIST_ENTRY Links;
    void *FileObject;
    unsigned long OpenCount;
    unsigned short NameLength;
    unsigned short Name[130];
};

struct FS_CONTROL {
    struct _LIST_ENTRY Files;
    unsigned long long Operations;
};

struct FS_REQUEST {
    unsigned long Kind;      /* 0 open (attach, a second open leaks), 1 close, 2 check */
    unsigned long Flags;
    unsigned long long Length;
    void *Context;
};

struct FS_CONTROL *FsControl;

/* Quota-charged: the context is billed to the process that opened the file. */
NOTAIL struct FS_FILE_CONTEXT *FsAttach(void *FileObject)
{
    struct FS_FILE_CONTEXT *Ctx = ExAllocatePoolWithQuotaTag(PagedPool, sizeof(*Ctx), 'lFsF');
    if (!Ctx)
        return 0;
    Ctx->FileObject = FileObject;
    Ctx->OpenCount = 1;
    Ctx->NameLength = 0;
    Ctx->Links.Flink = FsControl->Files.Flink;
    Ctx->Links.Blink = &FsControl->Files;
    FsControl->Files.Flink->Blink = &Ctx->Links;
    FsControl->Files.Flink = &Ctx->Links;
    FsControl->Operations++;
    return Ctx;
}

NOTAIL void FsDetach(struct FS_FILE_CONTEXT *Ctx)
{
    if (--Ctx->OpenCount)
        return; /* a second attach never drops the count to 0: the context leaks */
    Ctx->Links.Blink->Flink = Ctx->Links.Flink;
    Ctx->Links.Flink->Blink = Ctx->Links.Blink;
    ExFreePoolWithTag(Ctx, 'lFsF');
}

NOTAIL int FsStart(void)
{
    if (FsControl)
        return 1;
    FsControl = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*FsControl), 'tCsF');
    if (!FsControl)
        return 0;
    FsControl->Files.Flink = FsControl->Files.Blink = &FsControl->Files;
    FsControl->Operations = 0;
    return 1;
}

/* The list must stay a ring; a broken one is this driver's own bug check. */
NOTAIL void FsCheck(void)
{
    struct _LIST_ENTRY *Entry = FsControl->Files.Flink;
    while (Entry != &FsControl->Files) {
        if (Entry->Flink->Blink != Entry)
            KeBugCheckEx(0xDEADDEAD, (unsigned long long)Entry, 0, 0, 0);
        Entry = Entry->Flink;
    }
}

NOTAIL void FsWorkerRoutine(void *Context)
{
    struct FS_REQUEST *Request = Context;
    struct FS_FILE_CONTEXT *Ctx;
    if (!FsStart())
        return;
    switch (Request->Kind) {
    case 0:
        Ctx = FsAttach(Request->Context);
        if (Ctx && (Request->Flags & 1))
            Ctx->OpenCount++;
        break;
    case 1:
        if (FsControl->Files.Flink != &FsControl->Files)
            FsDetach((struct FS_FILE_CONTEXT *)FsControl->Files.Flink);
        break;
    case 2:
        FsCheck();
        break;
    }
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    struct FS_FILE_CONTEXT *Ctx;
    if (!FsStart())
        return (long)0xC000009A;
    Ctx = FsAttach(DriverObject);
    if (Ctx) {
        Ctx->OpenCount++;
        FsDetach(Ctx);
    }
    return 0;
}
""",
}


NDIS_BODIES = {
    "ndis": r"""
void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long NumberOfBytes,
                            unsigned long Tag);
void ExFreePoolWithTag(void *P, unsigned long Tag);

/* The miniport's NDIS_HANDLE names its adapter block; a null one is refused. The allocation has a
   frame of its own; the free is a tail call (jmp), so the miniport's frame is nt's caller. */
__declspec(dllexport) NOTAIL void *NdisAllocateMemoryWithTagPriority(void *NdisHandle,
    unsigned int Length, unsigned long Tag, int Priority)
{
    if (!NdisHandle || Priority < 0)
        return 0;
    return ExAllocatePoolWithTag(NonPagedPoolNx, Length, Tag);
}

__declspec(dllexport) void NdisFreeMemoryWithTagPriority(void *NdisHandle, void *VirtualAddress,
    unsigned long Tag)
{
    ExFreePoolWithTag(VirtualAddress, Tag);
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    return 0;
}
""",
    "nicmini": r"""
void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long NumberOfBytes,
                            unsigned long Tag);
__declspec(dllimport) void *NdisAllocateMemoryWithTagPriority(void *NdisHandle,
    unsigned int Length, unsigned long Tag, int Priority);
__declspec(dllimport) void NdisFreeMemoryWithTagPriority(void *NdisHandle, void *VirtualAddress,
    unsigned long Tag);

enum { NormalPoolPriority = 16 };

struct NM_CONTEXT {
    struct _LIST_ENTRY RxQueue;
    unsigned long long RxCount;
};

struct NM_RX {
    struct _LIST_ENTRY Links;
    unsigned char Data[0x5E8];
};

struct NM_REQUEST {
    unsigned long Kind;      /* 0 receive, 1 return the oldest */
    unsigned long Flags;
    unsigned long long Length;
    void *Context;
};

static char NmAdapterBlock[0x40];
void *NmAdapterHandle = NmAdapterBlock;
struct NM_CONTEXT *NmContext;

NOTAIL struct NM_RX *NmReceive(void)
{
    struct NM_RX *Rx = NdisAllocateMemoryWithTagPriority(NmAdapterHandle, sizeof(*Rx), 'xRmN',
                                                         NormalPoolPriority);
    if (!Rx)
        return 0;
    Rx->Links.Flink = &NmContext->RxQueue;
    Rx->Links.Blink = NmContext->RxQueue.Blink;
    NmContext->RxQueue.Blink->Flink = &Rx->Links;
    NmContext->RxQueue.Blink = &Rx->Links;
    NmContext->RxCount++;
    return Rx;
}

NOTAIL void NmReturn(struct NM_RX *Rx)
{
    Rx->Links.Blink->Flink = Rx->Links.Flink;
    Rx->Links.Flink->Blink = Rx->Links.Blink;
    NmContext->RxCount--;
    NdisFreeMemoryWithTagPriority(NmAdapterHandle, Rx, 'xRmN');
}

NOTAIL int NmStart(void)
{
    if (NmContext)
        return 1;
    NmContext = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*NmContext), 'xCmN');
    if (!NmContext)
        return 0;
    NmContext->RxQueue.Flink = NmContext->RxQueue.Blink = &NmContext->RxQueue;
    NmContext->RxCount = 0;
    return 1;
}

NOTAIL void NmWorkerRoutine(void *Context)
{
    struct NM_REQUEST *Request = Context;
    if (!NmStart())
        return;
    switch (Request->Kind) {
    case 0:
        NmReceive();
        break;
    case 1:
        if (NmContext->RxQueue.Flink != &NmContext->RxQueue)
            NmReturn((struct NM_RX *)NmContext->RxQueue.Flink);
        break;
    }
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    return NmStart() ? 0 : (long)0xC000009A;
}
""",
}


KMDF_BODIES = {
    "Wdf01000": r"""
void *ExAllocatePoolWithTag(enum _POOL_TYPE PoolType, unsigned long long NumberOfBytes,
                            unsigned long Tag);
void ExFreePoolWithTag(void *P, unsigned long Tag);

typedef void (*WDFFUNC)(void);

/* wdfglobals.h: the part of a client's globals the client sees. */
typedef struct _WDF_DRIVER_GLOBALS {
    void *Driver;
    unsigned long DriverFlags;
    unsigned long DriverTag;
    char DriverName[32];
    unsigned char DisplaceDriverUnload;
} WDF_DRIVER_GLOBALS;

/* One client: its globals (binding hands their address to it) and the EvtIoRead callback its
   queue was created with. The simulated target fills both in. */
struct FX_CLIENT {
    WDF_DRIVER_GLOBALS Globals;
    void (*EvtIoRead)(void *Request, unsigned long long Length);
};
_Static_assert(__builtin_offsetof(struct FX_CLIENT, Globals.DriverTag) == 0xC, "kmdf.json");
_Static_assert(__builtin_offsetof(struct FX_CLIENT, EvtIoRead) == 0x38, "kmdf.json");

/* Every framework object starts with this header; what the client asked for follows it. */
struct FX_OBJECT {
    struct _LIST_ENTRY Links;
    WDF_DRIVER_GLOBALS *Globals;
    unsigned long Tag;
    unsigned long Type;
    unsigned long long Size;
};

struct FX_WORK {
    unsigned long Kind;      /* 0 a read request arrives, 1 the oldest completes */
    unsigned long Flags;
    unsigned long long Length;
    void *Context;
};

struct FX_CLIENT FxClient;
struct _LIST_ENTRY FxPending;

/* The framework's allocator: a PoolTag of 0 means the client's DriverPoolTag. */
NOTAIL struct FX_OBJECT *FxPoolAllocate(WDF_DRIVER_GLOBALS *Globals, enum _POOL_TYPE PoolType,
                                        unsigned long long Size, unsigned long Tag)
{
    struct FX_OBJECT *Object;
    if (!Tag)
        Tag = Globals->DriverTag;
    Object = ExAllocatePoolWithTag(PoolType, sizeof(*Object) + Size, Tag);
    if (!Object)
        return 0;
    Object->Links.Flink = Object->Links.Blink = &Object->Links;
    Object->Globals = Globals;
    Object->Tag = Tag;
    Object->Type = 0;
    Object->Size = Size;
    return Object;
}

NOTAIL void FxObjectFree(struct FX_OBJECT *Object)
{
    ExFreePoolWithTag(Object, Object->Tag);
}

/* WdfMemoryCreate: function table index 192. */
NOTAIL long imp_WdfMemoryCreate(WDF_DRIVER_GLOBALS *Globals, void *Attributes,
    enum _POOL_TYPE PoolType, unsigned long PoolTag, unsigned long long BufferSize,
    void **Memory, void **Buffer)
{
    struct FX_OBJECT *Object;
    if (!Globals || !Memory || !BufferSize)
        return (long)0xC000000D;
    Object = FxPoolAllocate(Globals, PoolType, BufferSize, PoolTag);
    if (!Object)
        return (long)0xC000009A;
    Object->Type = 1;
    *Memory = Object;
    if (Buffer)
        *Buffer = Object + 1;
    return 0;
}

/* WdfObjectDelete: function table index 208. */
NOTAIL void imp_WdfObjectDelete(WDF_DRIVER_GLOBALS *Globals, void *Object)
{
    if (Globals && Object)
        FxObjectFree(Object);
}

WDFFUNC FxFunctionTable[444] = {
    [192] = (WDFFUNC)imp_WdfMemoryCreate,
    [208] = (WDFFUNC)imp_WdfObjectDelete,
};

/* The framework's own work, from a system worker thread: a read request arrives (its request
   object is made with the client's tag, queued, and handed to the client's EvtIoRead), or the
   oldest pending request completes (its object is freed). */
NOTAIL void FxIoDispatchWorker(void *Context)
{
    struct FX_WORK *Work = Context;
    struct FX_OBJECT *Request;
    if (!FxPending.Flink)
        FxPending.Flink = FxPending.Blink = &FxPending;
    if (!FxClient.EvtIoRead)
        return;
    switch (Work->Kind) {
    case 0:
        Request = FxPoolAllocate(&FxClient.Globals, NonPagedPoolNx, 0x98, 0);
        if (!Request)
            return;
        Request->Links.Flink = &FxPending;
        Request->Links.Blink = FxPending.Blink;
        FxPending.Blink->Flink = &Request->Links;
        FxPending.Blink = &Request->Links;
        FxClient.EvtIoRead(Request + 1, Work->Length);
        break;
    case 1:
        if (FxPending.Flink != &FxPending) {
            Request = (struct FX_OBJECT *)FxPending.Flink;
            Request->Links.Blink->Flink = Request->Links.Flink;
            Request->Links.Flink->Blink = Request->Links.Blink;
            FxObjectFree(Request);
        }
        break;
    }
}

long DriverEntry(void *DriverObject, void *RegistryPath)
{
    return 0;
}
""",
    "kmdfdrv": r"""
typedef void (*WDFFUNC)(void);
typedef struct { unsigned long Major, Minor, Build; } WDF_VERSION;
/* fxldr.h */
typedef struct {
    unsigned long Size;
    const unsigned short *Component;   /* PCWSTR */
    WDF_VERSION Version;
    unsigned long FuncCount;
    WDFFUNC **FuncTable;
    void *Module;
} WDF_BIND_INFO;
typedef long (*PFN_WDFMEMORYCREATE)(void *Globals, void *Attributes, enum _POOL_TYPE PoolType,
    unsigned long PoolTag, unsigned long long BufferSize, void **Memory, void **Buffer);
typedef void (*PFN_WDFOBJECTDELETE)(void *Globals, void *Object);
enum { WdfMemoryCreateTableIndex = 192, WdfObjectDeleteTableIndex = 208 };

__declspec(dllimport) long WdfVersionBind(void *DriverObject, void *RegistryPath,
    WDF_BIND_INFO *BindInfo, void **ComponentGlobals);

WDFFUNC *WdfFunctions_01015;
void *WdfDriverGlobals;
WDF_BIND_INFO WdfBindInfo = { sizeof(WDF_BIND_INFO), u"KmdfLibrary", { 1, 15, 0 }, 444,
    &WdfFunctions_01015, 0 };

struct KM_REQUEST {
    unsigned long Kind;      /* 0 a buffer, 1 free the oldest */
    unsigned long Flags;
    unsigned long long Length;
    void *Context;
};

/* The framework memory objects held, oldest first. */
void *KmHeld[256];
unsigned long KmHead, KmCount;

NOTAIL void KmHold(void *Memory)
{
    if (KmCount < 256) {
        KmHeld[(KmHead + KmCount) % 256] = Memory;
        KmCount++;
    }
}

NOTAIL void *KmAllocateBuffer(unsigned long long Length)
{
    void *Memory = 0, *Buffer = 0;
    if (((PFN_WDFMEMORYCREATE)WdfFunctions_01015[WdfMemoryCreateTableIndex])(WdfDriverGlobals,
            0, NonPagedPoolNx, 'fBmK', Length, &Memory, &Buffer) < 0)
        return 0;
    KmHold(Memory);
    return Buffer;
}

/* EvtIoRead: a buffer for the request, with PoolTag 0: the driver's DriverPoolTag. */
NOTAIL void KmEvtIoRead(void *Request, unsigned long long Length)
{
    void *Memory = 0;
    if (((PFN_WDFMEMORYCREATE)WdfFunctions_01015[WdfMemoryCreateTableIndex])(WdfDriverGlobals,
            0, NonPagedPoolNx, 0, Length ? Length : 0x100, &Memory, 0) >= 0)
        KmHold(Memory);
}

NOTAIL void KmFreeOldest(void)
{
    void *Memory;
    if (!KmCount)
        return;
    Memory = KmHeld[KmHead];
    KmHead = (KmHead + 1) % 256;
    KmCount--;
    ((PFN_WDFOBJECTDELETE)WdfFunctions_01015[WdfObjectDeleteTableIndex])(WdfDriverGlobals, Memory);
}

NOTAIL void KmWorkerRoutine(void *Context)
{
    struct KM_REQUEST *Request = Context;
    if (!WdfFunctions_01015)
        return;
    switch (Request->Kind) {
    case 0:
        KmAllocateBuffer(Request->Length ? Request->Length : 0x200);
        break;
    case 1:
        KmFreeOldest();
        break;
    }
}

/* What KMDF's stub (FxDriverEntry) does before the driver's own entry: bind to the framework,
   which fills WdfFunctions_01015 through the bind info and WdfDriverGlobals through the last
   argument. */
long DriverEntry(void *DriverObject, void *RegistryPath)
{
    long Status = WdfVersionBind(DriverObject, RegistryPath, &WdfBindInfo, &WdfDriverGlobals);
    return Status < 0 ? Status : 0;
}
""",
}


def tag_value(tag):
    """'Leak' -> 0x6B61654C: the ULONG whose little-endian bytes are the tag text."""
    return struct.unpack("<I", tag.encode("ascii"))[0]


def import_library(tmp, dll, names):
    """An import library for `dll`'s exports `names` (llvm-dlltool), as the WDK's ntoskrnl.lib or
    ndis.lib; its file name."""
    stem = dll.split(".")[0]
    with open(os.path.join(tmp, stem + ".def"), "w") as f:
        f.write("LIBRARY %s\nEXPORTS\n" % dll + "".join("    %s\n" % n for n in names))
    run([DLLTOOL, "-m", "i386:x86-64", "-d", stem + ".def", "-l", stem + ".lib"], cwd=tmp)
    return stem + ".lib"


def build_driver(tmp, d, bodies):
    """Generate, compile and link one driver in `tmp`; check its imports, exports and tag
    immediates; copy it (.c, .sys, .pdb) into testdata/drivers; return its manifest entry."""
    name = d["name"]
    runs = d.get("runs", "The simulated target (crates/kit/src/run/) runs this code: it queues "
                 "%s as a work\n * item with a request whose Kind picks the operation." % d["routine"])
    src = DRIVER_PRELUDE % {"summary": d["summary"], "runs": runs} + bodies[name]
    for tag in d["tags"]:
        if "'%s'" % tag[::-1] not in src:
            fail("%s.c does not use tag %s" % (name, tag))
    with open(os.path.join(DRIVERS_DIR, name + ".c"), "w", newline="\n") as f:
        f.write(src)
    shutil.copy(os.path.join(DRIVERS_DIR, name + ".c"), tmp)
    run([CLANG] + CFLAGS_COMMON + CFLAGS_DEBUG + [
        "-fdebug-compilation-dir=%s\\drivers" % FAKE_SRC_ROOT, "-c", name + ".c", "-o",
        name + ".obj"], cwd=tmp)
    libs = (["ntoskrnl.lib"] + (["ndis.lib"] if d.get("ndis_imports") else [])
            + (["WDFLDR.lib"] if d.get("wdfldr_imports") else []))
    run([LLD, "/DRIVER", "/SUBSYSTEM:NATIVE", "/NODEFAULTLIB", "/DEBUG",
         "/PDB:%s.pdb" % name, "/PDBALTPATH:%s.pdb" % name, "/OUT:%s.sys" % name,
         "/MACHINE:X64", "/Brepro", "/ENTRY:DriverEntry", "/NOIMPLIB",
         "/MAP:%s.map" % name,
         "/PDBSOURCEPATH:%s\\drivers" % FAKE_SRC_ROOT, name + ".obj"] + libs,
        cwd=tmp)
    sys_path = os.path.join(tmp, name + ".sys")
    pdb_path = os.path.join(tmp, name + ".pdb")
    data = read_bytes(sys_path)
    pe = parse_pe(data)
    rs = pe["rsds"]
    ident = check_identity(sys_path, pdb_path, rs["guid"], rs["age"])
    want_imports = {"ntoskrnl.exe": d["imports"]} if d["imports"] else {}
    if d.get("ndis_imports"):
        want_imports["ndis.sys"] = d["ndis_imports"]
    if d.get("wdfldr_imports"):
        want_imports["WDFLDR.SYS"] = d["wdfldr_imports"]
    got_imports = dict((dll, sorted(names)) for dll, names in pe["imports"].items())
    if got_imports != want_imports:
        fail("%s imports %s, expected %s" % (name, pe["imports"], want_imports))
    exports = dict((e["name"], e["rva"]) for e in pe["exports"])
    if sorted(exports) != sorted(d.get("exports", [])):
        fail("%s exports %s, expected %s" % (name, sorted(exports), d.get("exports", [])))
    mapsyms = parse_map(read_bytes(os.path.join(tmp, name + ".map")).decode(),
                        pe["image_base"])
    if d["routine"] not in mapsyms:
        fail("%s: no %s in the map file" % (name, d["routine"]))
    functions = dict((n, v["rva"]) for n, v in sorted(mapsyms.items())
                     if v["rva"] < pe["size_of_image"] and [
                         s for s in pe["sections"] if s["name"] == ".text"
                         and s["rva"] <= v["rva"] < s["rva"] + s["virtual_size"]])
    text = [s for s in pe["sections"] if s["name"] == ".text"][0]
    code = data[text["file_offset"]:text["file_offset"] + text["virtual_size"]]
    tags = []
    for tag in d["tags"]:
        needle = struct.pack("<I", tag_value(tag))
        hits = [text["rva"] + m.start() for m in re.finditer(re.escape(needle), code)]
        if not hits:
            fail("%s: tag %s is not an immediate in .text" % (name, tag))
        tags.append({"tag": tag, "value": tag_value(tag), "c_literal": "'%s'" % tag[::-1],
                     "immediate_rvas": hits})
    for f in (name + ".sys", name + ".pdb"):
        shutil.copy(os.path.join(tmp, f), os.path.join(DRIVERS_DIR, f))
    entry = {
        "name": name,
        "file": name + ".sys",
        "source": name + ".c",
        "summary": d["summary"],
        "pdb": {"file": name + ".pdb", "name": rs["name"], "guid": guid_text(rs["guid"]),
                "age": rs["age"], "store_key": store_key(rs["guid"], rs["age"])},
        "image_base": pe["image_base"],
        "size_of_image": pe["size_of_image"],
        "timestamp": pe["timestamp"],
        "entry_rva": pe["entry_rva"],
        "sections": [dict((k, s[k]) for k in ("name", "rva", "virtual_size", "raw_size",
                                               "file_offset", "characteristics"))
                     for s in pe["sections"]],
        "imports": want_imports,
        "routine": d["routine"],
        "functions": functions,
        "tags": tags,
    }
    if exports:
        entry["exports"] = exports
    if d.get("wrapper"):
        entry["wrapper"] = True
    if d.get("data"):
        missing = [n for n in d["data"] if n not in mapsyms]
        if missing:
            fail("%s: no %s in the map file" % (name, ", ".join(missing)))
        entry["data"] = dict((n, mapsyms[n]["rva"]) for n in d["data"])
    for key in ("framework", "offsets", "driver_tag"):
        if key in d:
            entry[key] = d[key]
    if d.get("callbacks"):
        entry["callbacks"] = dict((k, functions[f]) for k, f in d["callbacks"].items())
    log_line = "%-20s %s  sys %d B, pdb %d B, tags %s" % (
        name + ".sys", ident["pdbutil_guid"], len(data),
        os.path.getsize(os.path.join(DRIVERS_DIR, name + ".pdb")),
        ", ".join("%s@%s" % (t["tag"], ",".join("%#x" % r for r in t["immediate_rvas"]))
                  for t in tags))
    return entry, log_line


def build_drivers(log):
    os.makedirs(DRIVERS_DIR, exist_ok=True)
    with workdir("drivers") as tmp:
        import_library(tmp, "ntoskrnl.exe", NT_IMPORTS)
        import_library(tmp, "ndis.sys", NDIS_DRIVERS[0]["exports"])
        import_library(tmp, "WDFLDR.SYS", KMDF_DRIVERS[1]["wdfldr_imports"])
        for drivers, bodies, manifest, comment in [
            (DRIVERS, DRIVER_BODIES, "drivers.json",
             "GENERATED by testdata/nt/build.py. PDB GUIDs are lld's own (content hashes)."),
            (NDIS_DRIVERS, NDIS_BODIES, "ndis.json",
             "GENERATED by testdata/nt/build.py. The network pair, loaded by scenarios that ask "
             "for it; PDB GUIDs are lld's own (content hashes)."),
            (KMDF_DRIVERS, KMDF_BODIES, "kmdf.json",
             "GENERATED by testdata/nt/build.py. The KMDF pair, loaded by scenarios that ask "
             "for it; PDB GUIDs are lld's own (content hashes)."),
        ]:
            entries = []
            for d in drivers:
                entry, line = build_driver(tmp, d, bodies)
                entries.append(entry)
                log(line)
            record = {"comment": comment,
                      "import_library": "ntoskrnl.exe: %s (llvm-dlltool)" % ", ".join(NT_IMPORTS)}
            if drivers is NDIS_DRIVERS:
                record["import_library"] += "; ndis.sys: %s (llvm-dlltool)" % ", ".join(
                    NDIS_DRIVERS[0]["exports"])
            if drivers is KMDF_DRIVERS:
                record["import_library"] += "; WDFLDR.SYS: %s (llvm-dlltool)" % ", ".join(
                    KMDF_DRIVERS[1]["wdfldr_imports"])
            record["drivers"] = entries
            write_json(os.path.join(DRIVERS_DIR, manifest), record)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isf-dir", default=os.path.join(REPO, "..", "shared", "isf"),
                    help="directory holding <GUID>-<age>.json.xz (default: ../shared/isf "
                         "relative to the repository root)")
    ap.add_argument("--family", action="append", choices=[f.name for f in FAMILIES],
                    help="build only this family (repeatable)")
    ap.add_argument("--no-drivers", action="store_true", help="skip testdata/drivers")
    ap.add_argument("--drivers-only", action="store_true",
                    help="build testdata/drivers alone (no nt family, no ISF needed)")
    ap.add_argument("--keep-temp", metavar="DIR",
                    help="build in DIR/<name> and keep the objects, map files and copies there")
    args = ap.parse_args()
    global KEEP_DIR
    KEEP_DIR = os.path.abspath(args.keep_temp) if args.keep_temp else None
    for tool in (CLANG, LLD, PDBUTIL, READOBJ, DLLTOOL):
        if shutil.which(tool) is None:
            print("error: %s not found (apt-get install clang-19 lld-19 llvm-19)" % tool,
                  file=sys.stderr)
            return 2
    isf_dir = os.path.abspath(args.isf_dir)

    def log(msg):
        print(msg, flush=True)

    outputs = []
    try:
        for fam in FAMILIES:
            if args.drivers_only or (args.family and fam.name not in args.family):
                continue
            build_family(fam, isf_dir, log)
            d = os.path.join(HERE, fam.name)
            outputs += [os.path.join(d, f) for f in sorted(os.listdir(d))]
        if not args.no_drivers:
            build_drivers(log)
            outputs += [os.path.join(DRIVERS_DIR, f) for f in sorted(os.listdir(DRIVERS_DIR))]
    except BuildError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    # Rerunning must reproduce these digests exactly.
    log("sha256 of the outputs:")
    for path in outputs:
        log("  %s  %s" % (hashlib.sha256(read_bytes(path)).hexdigest()[:16],
                          os.path.relpath(path, REPO)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
