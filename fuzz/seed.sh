#!/usr/bin/env bash
# Seed corpora for the fuzz targets, written to fuzz/corpus/<target>/
# (ignored by git): from the test kit (pooldump-kit-cli, the pooldump binary on
# the kit's dumps) and from the real files in ../shared (realworld/, captures/,
# isf/), which are read here and never copied into the repository.
#
#   fuzz/seed.sh            # all targets
#   SHARED=/path/to/shared fuzz/seed.sh
#   SKIP_KIT=1 fuzz/seed.sh # without building the kit (no dump or snapshot seeds)
#
# Needs python3 and xz; builds the main workspace's debug binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${SHARED:-$root/../shared}
corpus=$here/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$corpus"
c() { mkdir -p "$corpus/$1"; echo "$corpus/$1"; }
have_shared=1
[ -d "$shared" ] || { echo "seed.sh: $shared is missing: seeding from the kit only" >&2; have_shared=0; }

# First 64 KiB of a dump: the header, the run list or bitmap, the first pages
# (libFuzzer mutates what it is given; whole dumps would make every run slow).
head64() { head -c 65536 "$1" > "$2"; }

if [ -z "${SKIP_KIT:-}" ]; then
echo "building the kit and pooldump (debug)" >&2
(cd "$root" && cargo build -q -p pooldump -p pooldump-kit-cli)
kit=$root/target/debug/pooldump-kit
pd=$root/target/debug/pooldump

# --- the kit: kernel dumps of three builds in each container, small dumps,
#     snapshots of them
for b in win7-7601 win10-19041 win11-22000; do
  "$kit" generate --build "$b" --kind kernel-bitmap --out "$work/$b-kernel-bitmap" >/dev/null
  head64 "$work/$b-kernel-bitmap/MEMORY.DMP" "$(c dump_open)/kit-$b-kernel-bitmap"
  # The same machine as Windows 7's DumpType 2 summary dump and as the
  # DumpType 6 kernel bitmap dump of recent Windows.
  for k in summary bitmap-kernel; do
    "$kit" generate --build "$b" --kind "$k" --out "$work/$b-$k" >/dev/null
    head64 "$work/$b-$k/MEMORY.DMP" "$(c dump_open)/kit-$b-$k"
    rm -rf "$work/$b-$k"
  done
  # Full and complete-bitmap dumps hold all RAM: the same machine with
  # 256 MiB keeps them small.
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s["ram_mib"]=256; json.dump(s, open(sys.argv[2], "w"))' \
    "$work/$b-kernel-bitmap/scenario.json" "$work/$b-small-ram.json"
  for k in full complete-bitmap; do
    "$kit" generate --build "$b" --scenario "$work/$b-small-ram.json" --kind "$k" --out "$work/$b-$k" >/dev/null
    head64 "$work/$b-$k/MEMORY.DMP" "$(c dump_open)/kit-$b-$k"
  done
  "$kit" generate --build "$b" --kind small --out "$work/$b-small" >/dev/null
  cp "$work/$b-small/Minidump.dmp" "$(c triage)/kit-$b-small.dmp"
  "$pd" snapshot "$work/$b-full/MEMORY.DMP" --symbol-path "$work/$b-full/symbols" \
    -o "$(c snapshot_json)/kit-$b.json" >/dev/null 2>&1 || true
  # Pool walkers: the 16-byte head (build index, holes, flags, KernBase
  # bits) then 8 KiB of the dump's memory as the cyclic image; once with a
  # built-in build, once with a segment-heap build's PDB (0xF0 and up).
  python3 -c 'import sys; h=bytes([int(sys.argv[1]) % 10, 0, 3]) + bytes(13); d=open(sys.argv[2],"rb").read()[0x2000:0x4000]; open(sys.argv[3],"wb").write(h+d)' \
    "$RANDOM" "$work/$b-full/MEMORY.DMP" "$(c pool_walkers)/kit-$b"
  python3 -c 'import sys; h=bytes([0xF0 + int(sys.argv[1]) % 3, 0, 3]) + bytes(13); d=open(sys.argv[2],"rb").read()[0x2000:0x4000]; open(sys.argv[3],"wb").write(h+d)' \
    "$RANDOM" "$work/$b-full/MEMORY.DMP" "$(c pool_walkers)/kit-$b-segment-heap"
  rm -rf "$work/$b-full" "$work/$b-complete-bitmap"
done
head64 "$root/testdata/sample/MEMORY.DMP" "$(c dump_open)/sample"
"$pd" snapshot "$root/testdata/sample/MEMORY.DMP" --symbol-path "$root/testdata/sample/symbols" \
  -o "$(c snapshot_json)/sample.json" >/dev/null 2>&1 || true
fi

# --- PDBs: the committed nt, driver and fixture PDBs
for p in "$root"/testdata/nt/*/ntkrnlmp.pdb; do
  cp "$p" "$(c pdb_layouts)/$(basename "$(dirname "$p")").pdb"
done
cp "$root"/testdata/drivers/*.pdb "$root"/testdata/pdb-fixtures/*.pdb "$(c pdb_layouts)/"

# --- compressed store files (.pd_): CABs of a driver PDB and a small file
(cd "$here" && cargo run -q --example seedgen -- cab "$root/testdata/drivers/netsim.pdb" "$(c cab_store)/netsim.pd_")
(cd "$here" && cargo run -q --example seedgen -- cab "$root/testdata/drivers/drivers.json" "$(c cab_store)/small.cab")

# --- page walk: hand-made 4-level tables (PML4 -> PDPT -> PD -> PT -> data,
#     a 2 MiB page, a 1 GiB page, a self-map), after the 64-byte head
python3 - "$(c page_walk)" <<'EOF'
import struct, sys, os
out = sys.argv[1]
def head(frames, dtb, vas, flags=0):
    h = struct.pack('<QQ', frames, dtb) + b''.join(struct.pack('<Q', v) for v in vas[:6])
    return h[:64].ljust(64, b'\0')
def page(entries):
    p = bytearray(4096)
    for i, v in entries.items():
        struct.pack_into('<Q', p, i * 8, v)
    return bytes(p)
va = 0xFFFFF80000001000
i4, i3, i2, i1 = (va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511, (va >> 12) & 511
pages = [page({i4: 0x1003, 0x1ED: 0x0003}), page({i3: 0x2003, 5: 0x40000083}),
         page({i2: 0x3003, 7: 0x200083}), page({i1: 0x4003, 2: 0x4800}), page({0: 0x1122334455667788})]
open(os.path.join(out, 'tables'), 'wb').write(head(16, 0, [va, va + 0x800, 0xFFFFF6FB7DBED000, va + 0x1000, 0xFFFFF80140000000, 0xFFFFF80000E00000]) + b''.join(pages))
open(os.path.join(out, 'empty'), 'wb').write(head(1, 0, [va]) + bytes(4096))
EOF

# --- stack unwinder: arbitrary-encoded; a few byte strings to start from
python3 - "$(c stack_unwind)" <<'EOF'
import os, sys, random
out = sys.argv[1]
r = random.Random(15)
for i in range(8):
    open(os.path.join(out, f'r{i}'), 'wb').write(bytes(r.randrange(256) for _ in range(64 + 256 * i)))
EOF

# --- call sites: each kit driver (driver byte, flags, base, size, two
#     tags, no patches), with a second loader entry, with the module named
#     by --module, at a base near the top of the address space, relabelling
#     another site; and each driver's file, poolapis.sys (NDIS, filter
#     manager and lookaside calls, tags on the stack) and kmdfapis.sys (KMDF's
#     function table, CFG's dispatch, a load configuration) and kmdfdrv.sys
#     (a KMDF stub's WdfVersionBind call, whose last argument names the
#     driver's globals), as the raw input (driver byte 3)
python3 - "$(c callsites)" "$root"/testdata/drivers/{leakydrv,fsfilt,netsim}.sys \
  "$root"/testdata/callsite-fixtures/{poolapis,kmdfapis,kmdfapis-nocfg}.sys \
  "$root"/testdata/drivers/kmdfdrv.sys <<'EOF'
import os, struct, sys
out, files = sys.argv[1], sys.argv[2:]
def head(driver, flags, base=0, tags=(0, 0)):
    return bytes([driver, flags]) + struct.pack('<QI2I', base, 0, *tags) + b'\0\0'
tags = tuple(struct.unpack('<I', t)[0] for t in (b'Leak', b'NSrx'))
for d in range(3):
    for name, flags, base in [('plain', 0, 0), ('second', 4, 0), ('wanted', 16, 0),
                              ('top', 1, 0xFFFFFFFFFFFFE000), ('pick', 0x24, 0)]:
        open(os.path.join(out, f'kit{d}-{name}'), 'wb').write(head(d, flags, base, tags))
for f in files:
    name = os.path.basename(f)
    open(os.path.join(out, f'raw-{name}'), 'wb').write(head(3, 0, 0, tags) + open(f, 'rb').read())
EOF

# --- relabel maps of the kit's drivers, made by pooldump's own planning
(cd "$here" && cargo run -q --example seedgen -- relabel-maps "$(c relabel_map)")

# --- pool walkers: a working segment heap in the cyclic memory, for each
#     segment-heap build's PDB (random bytes never pass its signatures)
(cd "$here" && cargo run -q --example seedgen -- segment-heap "$(c pool_walkers)")

# --- hittag: real PoolHitTag stops of the kit's KMDF machine (CONTEXT,
#     stack, module bases), so the analysis starts from stacks that reach
#     the driver through the framework
(cd "$here" && cargo run -q --example seedgen -- hittag-stops "$(c hittag)")

if [ "$have_shared" = 1 ]; then
  # --- ISF: the real (xz) files, and a trimmed JSON of one with its xz
  cp "$shared"/isf/*.json.xz "$(c isf)/"
  python3 - "$shared/isf/06564D3477822C7D97F04852CBD5AFD6-1.json.xz" "$(c isf)" <<'EOF'
import json, lzma, os, sys
isf = json.loads(lzma.open(sys.argv[1]).read())
keep = [t for t in isf['user_types'] if t.startswith(('_POOL', '_KLDR', '_LDR_DATA', '_EPROCESS', '_LIST_ENTRY', '_UNICODE_STRING', '_MM_SESSION'))]
small = {
    'metadata': isf['metadata'],
    'base_types': isf['base_types'],
    'user_types': {k: isf['user_types'][k] for k in keep},
    'enums': {k: v for k, v in list(isf['enums'].items())[:4]},
    'symbols': {k: v for k, v in isf['symbols'].items() if k.startswith(('Pool', 'Ps', 'Ke', 'Ex', 'Kd', 'Mm'))},
}
text = json.dumps(small).encode()
open(os.path.join(sys.argv[2], 'trimmed.json'), 'wb').write(text)
open(os.path.join(sys.argv[2], 'trimmed.json.xz'), 'wb').write(lzma.compress(text, format=lzma.FORMAT_XZ))
EOF

  # --- pooltag.txt: pieces of Microsoft's file, and one in UTF-16 with a BOM
  split -b 16384 -d "$shared/realworld/pooltag.txt" "$(c pooltag)/ms-"
  python3 - "$shared/realworld/pooltag.txt" "$(c pooltag)/ms-utf16" <<'EOF'
import sys
t = open(sys.argv[1], 'rb').read()[:16384].decode('utf-8', 'replace')
open(sys.argv[2], 'wb').write(b'\xff\xfe' + t.encode('utf-16-le'))
EOF

  # --- PoolMon and !poolused text
  cp "$shared"/realworld/poolmon-docs-examples.txt "$shared"/realworld/poolused*.txt "$(c text_import)/"

  # --- the real ARM64 small memory dump
  cp "$shared/realworld/triage-arm64-22000.dmp" "$(c triage)/"

  # --- KDNET: every UDP payload of the captures, and the C arrays of test_pkt.h
  python3 - "$shared/captures" "$(c kdnet_datagram)" <<'EOF'
import gzip, os, re, struct, sys
cap, out = sys.argv[1], sys.argv[2]
def udp_payloads(frames):
    for data in frames:
        # Ethernet (14) [+ VLAN], IPv4 or IPv6, UDP.
        off, et = 12, None
        et = struct.unpack_from('>H', data, off)[0]; off += 2
        if et == 0x8100:
            et = struct.unpack_from('>H', data, off + 2)[0]; off += 4
        if et == 0x0800:
            ihl = (data[off] & 15) * 4
            if data[off + 9] != 17: continue
            off += ihl
        elif et == 0x86DD:
            if data[off + 6] != 17: continue
            off += 40
        else:
            continue
        yield data[off + 8:]
def pcap(b):
    le = b[:4] == b'\xd4\xc3\xb2\xa1'
    e = '<' if le else '>'
    off = 24
    while off + 16 <= len(b):
        incl = struct.unpack_from(e + 'I', b, off + 8)[0]
        yield b[off + 16: off + 16 + incl]
        off += 16 + incl
def pcapng(b):
    off = 0
    while off + 12 <= len(b):
        btype, blen = struct.unpack_from('<II', b, off)
        if btype == 6:
            caplen = struct.unpack_from('<I', b, off + 20)[0]
            yield b[off + 28: off + 28 + caplen]
        if blen < 12: break
        off += blen
n = 0
for name, frames in [('uncut', pcapng(gzip.open(os.path.join(cap, 'windbg-uncut.pcapng.gz')).read())),
                     ('kek', pcap(open(os.path.join(cap, 'kek.pcap'), 'rb').read()))]:
    for i, p in enumerate(udp_payloads(frames)):
        if p[:4] == b'MDBG':
            open(os.path.join(out, f'{name}-{i:04d}'), 'wb').write(p); n += 1
text = open(os.path.join(cap, 'test_pkt.h'), errors='replace').read()
for m in re.finditer(r'(\w+)\s*\[\]\s*=\s*\{([^}]*)\}', text):
    bs = bytes(int(x, 16) for x in re.findall(r'0x([0-9a-fA-F]{1,2})', m.group(2)))
    if bs:
        open(os.path.join(out, f'pkt-{m.group(1)}'), 'wb').write(bs); n += 1
print(f'{n} datagrams', file=sys.stderr)
EOF
  (cd "$here" && cargo run -q --example seedgen -- kdnet-packets "$corpus/kdnet_datagram" "$(c kdnet_packet)")
fi

for d in "$corpus"/*/; do
  printf '%-16s %5d files %10d bytes\n' "$(basename "$d")" "$(ls "$d" | wc -l)" "$(cat "$d"/* 2>/dev/null | wc -c)"
done
