"""The `pooldump` module against the kit's ground truth.

Run by tests/cli/python_bindings.rs, which writes a kit machine's dump, its
symbol store, its truth (truth.json) and a corrupt file into
$POOLDUMP_TEST_DIR. Every expectation comes from the truth, never from
pooldump.
"""

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

import pooldump

DATA = Path(os.environ["POOLDUMP_TEST_DIR"])
DUMP = str(DATA / "MEMORY.DMP")
SYMBOLS = str(DATA / "symbols")


@pytest.fixture(scope="module")
def truth():
    return json.loads((DATA / "truth.json").read_text())


@pytest.fixture(scope="module")
def dump():
    return pooldump.open(DUMP, symbol_path=SYMBOLS, offline=True)


def test_info_names_the_kernel(dump, truth):
    info = dump.info()
    assert info["build"] == truth["build_number"]
    assert info["kern_base"] == truth["kernel"]["kern_base"]
    assert info["pdb_name"] == "ntkrnlmp.pdb"
    assert len(info["boot_id"]) == 16
    assert info["modules"] >= 3


def test_analyze_matches_the_truth(dump, truth):
    t = dump.analyze()
    assert isinstance(t, pa.Table)
    tags_schema, _ = pooldump.schemas()
    assert t.schema.equals(tags_schema)
    got = {(r["tag"], r["type"]): r for r in t.to_pylist()}
    expected = [x for x in truth["tags"] if x["diff"] or x["allocs"]]
    assert expected, "the truth lists no tag"
    for x in expected:
        r = got[(x["tag"], x["pool"])]
        assert (r["allocs"], r["frees"], r["diff"], r["bytes"]) == (
            x["reported_allocs"], x["reported_frees"], x["diff"], x["bytes"]
        ), x["tag"]
    # Mapped_Driver from the drivers' code in the dump.
    assert got[("Leak", "Nonp")]["mapped_driver"] == "leakydrv.sys"
    assert set(t.column("build").to_pylist()) == {truth["build_number"]}


def test_find_lists_every_live_allocation_of_a_tag(dump, truth):
    live = [a for a in truth["allocations"] if a["tag"] == "Leak" and a["live"]]
    t = dump.find(["Leak"], allocated_only=True)
    assert t.num_rows == len(live)
    assert sorted(t.column("va").to_pylist()) == sorted(a["va"] for a in live)
    assert set(t.column("state").to_pylist()) == {"Allocated"}
    both = dump.find(["Leak", "LkB?"])
    assert set(both.column("tag").to_pylist()) == {"Leak", "LkBf"}


def test_find_reads_each_allocation_s_bytes(dump):
    # Written by tests/cli/python_bindings.rs from the machine's memory.
    want = json.loads((DATA / "contents.json").read_text())
    t = dump.find(["Leak"], allocated_only=True, bytes=0x20)
    assert t.num_rows == len(want) > 0
    assert t.schema.field("contents").type == pa.binary()
    for row in t.to_pylist():
        assert row["contents"] == bytes.fromhex(want[str(row["va"])])
        assert row["contents_unreadable"] == 0
    assert "contents" not in dump.find(["Leak"]).column_names
    with pytest.raises(ValueError):
        dump.find(["Leak"], bytes=0)


def test_find_refuses_a_bad_pattern(dump):
    with pytest.raises(ValueError):
        dump.find(["toolong"])
    with pytest.raises(ValueError):
        dump.find([])


def test_analyze_files_turns_failures_into_rows(truth):
    tags, dumps = pooldump.analyze_files(
        [DUMP, str(DATA / "corrupt.dmp"), str(DATA / "missing.dmp")],
        symbol_path=SYMBOLS,
        offline=True,
    )
    rows = {Path(r["path"]).name: r for r in dumps.to_pylist()}
    assert rows["MEMORY.DMP"]["status"] == "ok"
    assert rows["MEMORY.DMP"]["tags"] == tags.num_rows > 0
    assert rows["corrupt.dmp"]["status"] == "error"
    assert "32-bit" in rows["corrupt.dmp"]["error"]
    assert rows["missing.dmp"]["status"] == "error"
    assert "cannot read the file" in rows["missing.dmp"]["error"]
    assert set(tags.column("path").to_pylist()) == {DUMP}


def test_open_errors_name_the_file():
    with pytest.raises(pooldump.PooldumpError, match="corrupt.dmp"):
        pooldump.open(str(DATA / "corrupt.dmp"), symbol_path=SYMBOLS, offline=True)
    # No PDB on the path, the built-in table refused, the layout cache
    # (which earlier tests filled) left out: nothing gives nt's layouts.
    with pytest.raises(pooldump.PooldumpError, match="no symbols"):
        pooldump.open(
            DUMP,
            symbol_path=str(DATA / "empty-store"),
            offline=True,
            builtin=False,
            cache=False,
        )
