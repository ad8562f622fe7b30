"""A build whose inputs (plain and compressed) and benchmark are memory:// URLs: the same outputs as from the same
files on disk (provenance then names the URL), stages keyed on the URL files' content, a missing URL one line."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
import zstandard

from crystalmix.core.errors import UserError
from sft_builder.build import build
from sft_builder.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo_data"
SOURCES = {"oasst1_trees.jsonl": "oasst1", "guanaco.jsonl": "guanaco", "sharegpt.json": "sharegpt",
           "slimorca.jsonl": "sharegpt", "code_alpaca.json": "alpaca", "webgen.jsonl": "conversations"}


def _files() -> dict[str, bytes]:
    """The inputs as both builds see them: two compressed (gzip, zstd), the rest as bundled; a benchmark."""
    out = {}
    for name in SOURCES:
        data = (DEMO / name).read_bytes()
        if name.startswith("guanaco"):
            name, data = name + ".gz", gzip.compress(data, mtime=0)
        elif name.startswith("slimorca"):
            name, data = name + ".zst", zstandard.ZstdCompressor().compress(data)
        out[f"data/{name}"] = data
    out["bench/mbpp.jsonl"] = (DEMO / "benchmarks" / "mbpp_sample.jsonl").read_bytes()
    return out


def _manifest(prefix: str) -> str:
    lines = ["seed: 7", "sources:"]
    for rel in (r for r in _files() if r.startswith("data/")):
        name = rel.split("/")[1].split(".")[0]
        adapter = SOURCES[next(s for s in SOURCES if s.startswith(name + "."))]
        lines += [f"  - name: {name}", f"    adapter: {adapter}", f"    inputs: {prefix}{rel}"]
    lines += ["steps:", "  clean: {}", "  quality: {min_chars: 20}", "  exact_dedup: {}",
              "  near_dedup: {threshold: 0.8}", "  decontaminate:", "    benchmarks:",
              f"      - {{name: mbpp, path: {prefix}bench/mbpp.jsonl, fields: [text], solution_fields: [code]}}",
              "split: {test_fraction: 0.1}", "tokenize: {tokenizer: demo, template: crystalchat, seq_len: 512}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def mem(memory_root: str) -> str:
    return f"{memory_root}/"


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".work" not in p.parts}


def _setup(tmp_path: Path, mem: str) -> tuple[Path, Path]:
    fs = fsspec.filesystem("memory")
    for rel, data in _files().items():
        (tmp_path / "local" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / rel).write_bytes(data)
        fs.pipe_file(fsspec.core.url_to_fs(mem + rel)[1], data)
    (tmp_path / "local" / "m.yaml").write_text(_manifest(""), encoding="utf-8")
    (tmp_path / "url").mkdir()
    (tmp_path / "url" / "m.yaml").write_text(_manifest(mem), encoding="utf-8")
    return tmp_path / "local" / "m.yaml", tmp_path / "url" / "m.yaml"


def test_memory_url_inputs_build_what_the_same_files_on_disk_build(tmp_path: Path, mem: str) -> None:
    local_m, url_m = _setup(tmp_path, mem)
    a = build(load_manifest(local_m), tmp_path / "out-local")
    b = build(load_manifest(url_m), tmp_path / "out-url")
    want, got = _outputs(tmp_path / "out-local"), _outputs(tmp_path / "out-url")
    assert sorted(got) == sorted(want) and any(n.endswith(".h5") for n in want)
    # The two manifests differ only in how they name the inputs: provenance names the URL (a local file is named
    # relative to its manifest), and the manifest's settings fingerprint covers the inputs as written. With those
    # two mapped, every output is the same bytes; the tokenized data files are the same bytes as they are.
    fps = (a.report["fingerprint"], b.report["fingerprint"])
    tfps = [json.loads(_outputs(out)["tokenized/train/metadata.json"])["fingerprint"]
            for out in (tmp_path / "out-local", tmp_path / "out-url")]
    provenance = 0
    for name, data in want.items():
        if name.endswith(".h5"):
            assert got[name] == data, name
        elif name.endswith(".parquet"):
            left, right = pq.read_table(io.BytesIO(data)).to_pylist(), pq.read_table(io.BytesIO(got[name])).to_pylist()
            assert [r["meta"] for r in right] != [r["meta"] for r in left]
            for r in right:
                r["meta"] = r["meta"].replace(mem, "")
            assert right == left, name
        else:
            provenance += got[name].count(mem.encode())
            mapped = got[name].replace(mem.encode(), b"").replace(fps[1].encode(), fps[0].encode())
            mapped = mapped.replace(tfps[1].encode(), tfps[0].encode())
            if name.endswith(("metadata.json", ".done.json")):  # digests of the files that hold a fingerprint
                mapped = re.sub(rb'"xxh3": "[0-9a-f]+"', b'"xxh3": ""', mapped)
                data = re.sub(rb'"xxh3": "[0-9a-f]+"', b'"xxh3": ""', data)
            assert mapped == data, name
    assert provenance > 0


def test_stages_key_on_the_content_at_the_url(tmp_path: Path, mem: str) -> None:
    _, url_m = _setup(tmp_path, mem)
    out = tmp_path / "out"
    build(load_manifest(url_m), out)
    again = build(load_manifest(url_m), out)
    assert sum(s.startswith("ingest-") for s in again.skipped_stages) == len(SOURCES)  # nothing re-read for keys
    fs = fsspec.filesystem("memory")
    path = fsspec.core.url_to_fs(mem + "data/webgen.jsonl")[1]
    old = fs.cat_file(path)
    new = old.replace(b"a", b"b", 1)
    assert len(new) == len(old)
    fs.pipe_file(path, new)  # same size, other content
    third = build(load_manifest(url_m), out)
    redone = {s.split("-")[1] for s in third.skipped_stages if s.startswith("ingest-")}
    assert "webgen" not in redone and len(redone) == len(SOURCES) - 1


def test_a_missing_input_url_stops_at_the_manifest_naming_it(tmp_path: Path, mem: str) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(f"sources:\n  - name: a\n    adapter: sharegpt\n    inputs: {mem}nothing.jsonl\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_manifest(m)
    assert f"file not found: {mem}nothing.jsonl" in str(err.value) and f"{m}:4" in str(err.value)
