"""Stage options end to end: file-parity halves, document-mode FIM, hub streaming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crystalmix.core import hdf5
from pretrain.build import build_stage
from pretrain.config import load_manifest
from pretrain.executors import LocalExecutor

from .conftest import DEMO, stage_manifest

PY = str(DEMO / "starcoder" / "python" / "*.parquet")


def _rows(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("data-*.h5"))
    return np.concatenate([hdf5.read_rows(f) for f in files]) if files else np.zeros((0, 3, 0), dtype=np.int32)


def _build(tmp: Path, name: str, sources: list[dict], **changes: object) -> Path:
    folder = tmp / name
    folder.mkdir()
    cfg = load_manifest(stage_manifest(folder, sources=sources, mixture={"offline": False}, **changes))
    build_stage(cfg, folder / "out", LocalExecutor(1), progress=False)
    return folder / "out"


SP = str(DEMO / "slimpajama" / "*.jsonl.zst")
SETS = {"RedPajamaC4": {"name": "c4", "weight": 0.27}, "RedPajamaWikipedia": {"name": "wikipedia", "weight": 0.03},
        "RedPajamaGithub": {"name": "github", "weight": 0.04}}


def _halves(tmp: Path, per_file: int, files_per_shard: int, halves: tuple[int | None, ...] = (0, 1)
            ) -> dict[int | None, dict[str, np.ndarray]]:
    """File-parity halves (None: the whole) of the demo SlimPajama, per subset."""
    out: dict[int | None, dict[str, np.ndarray]] = {}
    for half in halves:
        src = {"name": "sp", "paths": [SP], "subset_field": "meta.redpajama_set_name", "subsets": SETS,
               "files_per_shard": files_per_shard, **({} if half is None else {"half": half})}
        built = _build(tmp, f"p{per_file}-g{files_per_shard}-h{half}", [src],
                       split={"method": "file_parity", "seed": 360}, samples_per_file=per_file)
        out[half] = {sub["name"]: _rows(built / sub["name"] / "epoch-0") for sub in SETS.values()}
    return out


def test_file_parity_halves_do_not_depend_on_the_shard_plan(tmp_path: Path) -> None:
    """Packed files are numbered per subset whatever `files_per_shard` is; both halves get ~50% of each subset."""
    alone, grouped = _halves(tmp_path, 50, 1, (0, 1, None)), _halves(tmp_path, 50, 2)
    for name in ("c4", "wikipedia", "github"):
        for half in (0, 1):
            assert np.array_equal(alone[half][name], grouped[half][name])
        n0, n1 = len(alone[0][name]), len(alone[1][name])
        assert n0 + n1 > 100 and abs(n0 / (n0 + n1) - 0.5) <= 0.1, (name, n0, n1)
        # The halves split the whole: same rows, each once.
        whole = sorted(r.tobytes() for r in alone[None][name])
        assert sorted(r.tobytes() for r in np.concatenate([alone[0][name], alone[1][name]])) == whole


def test_file_parity_with_big_files_still_fills_both_halves(tmp_path: Path) -> None:
    """At LLM360's 50,000 rows per file every packed file is partial: half 1 must not come out empty."""
    big = _halves(tmp_path, 50_000, 2)
    for name in ("c4", "wikipedia", "github"):
        assert len(big[0][name]) > 0 and len(big[1][name]) > 0, name


def test_document_mode_fim_builds_valid_rows(tmp_path: Path) -> None:
    src = {"name": "py", "paths": [PY], "text_field": "content",
           "fim": {"rate": 0.5, "spm_rate": 0.5, "mode": "document"}}
    out = _build(tmp_path, "doc", [src])
    rows, problems = hdf5.validate_folder(out / "py" / "epoch-0")
    assert problems == [] and rows > 0
    meta = hdf5.read_metadata(out / "py" / "epoch-0")
    assert meta["fim"]["mode"] == "document"
    assert 0.3 < meta["fim"]["fim_applied"] / meta["fim"]["fim_candidates"] < 0.7
    inputs = _rows(out / "py" / "epoch-0")[:, 0]
    assert (inputs == meta["special_tokens"]["fim_prefix"]).sum() == meta["fim"]["fim_applied"]


def test_hub_source_streams_shard_per_hub_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id goes through `datasets` streaming, one shard per dataset shard, like local files."""
    pytest.importorskip("datasets")
    import pyarrow.parquet as pq
    from datasets import load_dataset

    files = []
    for lang in ("css", "html"):
        table = pq.read_table(DEMO / "starcoder" / lang / "train-00000-of-00001.parquet")
        path = tmp_path / f"{lang}.parquet"
        pq.write_table(table, path)
        files.append(str(path))
    from crystalmix.core import readers

    monkeypatch.setattr(readers, "load_hub", lambda name, split="train", data_files=None: load_dataset(
        "parquet", data_files=files, split=split, streaming=True))
    hub = _build(tmp_path, "hub", [{"name": "code", "hub": "bigcode/fake", "text_field": "content"}])
    local = _build(tmp_path, "local", [{"name": "code", "paths": files, "text_field": "content"}])
    assert np.array_equal(_rows(hub / "code" / "epoch-0"), _rows(local / "code" / "epoch-0"))
    assert hdf5.read_metadata(hub / "code" / "epoch-0")["files"]


def test_grouped_shard_skips_only_its_bad_file(tmp_path: Path) -> None:
    """files_per_shard groups inputs; --skip-bad-files drops the bad member and keeps the others."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    for name, lang in (("a", "css"), ("c", "html")):
        shutil.copy(DEMO / "starcoder" / lang / "train-00000-of-00001.parquet", data / f"{name}.parquet")
    (data / "b.parquet").write_bytes(b"PAR1 not parquet")
    src = {"name": "code", "paths": [str(data / "*.parquet")], "text_field": "content", "files_per_shard": 3}
    folder = tmp_path / "grouped"
    folder.mkdir()
    cfg = load_manifest(stage_manifest(folder, sources=[src], mixture={"offline": False}))
    summary = build_stage(cfg, folder / "out", LocalExecutor(1), progress=False, skip_bad_files=True)
    assert len(summary["bad_files"]) == 1 and "b.parquet" in summary["bad_files"][0]
    good = [str(data / "a.parquet"), str(data / "c.parquet")]
    clean = _build(tmp_path, "clean", [{**src, "paths": good}])
    assert np.array_equal(_rows(folder / "out" / "code" / "epoch-0"), _rows(clean / "code" / "epoch-0"))
    index = json.loads((folder / "out" / "code" / "epoch-0" / "index.json").read_text())
    assert {f["input"] for f in index["files"]} == {"a.parquet,b.parquet,c.parquet"}


def test_everything_skipped_is_reported_not_a_crash(tmp_path: Path) -> None:
    src = {"name": "py", "paths": [PY], "text_field": "content"}
    folder = tmp_path / "none"
    folder.mkdir()
    cfg = load_manifest(stage_manifest(folder, sources=[src], min_sequence_len=10**9))
    summary = build_stage(cfg, folder / "out", LocalExecutor(1), progress=False)
    assert summary["folders"] == [] and summary["empty_outputs"] == ["py/epoch-0"]
    counts = summary["documents"]["py/epoch-0"]
    assert counts["too_short"] + counts.get("empty", 0) == counts["documents_read"] > 0


def _jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_cerebras_tokenization_rows_data_params_and_vocab(tmp_path: Path) -> None:
    """BOS per document, no padded row, ftfy counted, data_params.json's stats recomputed from the files."""
    import yaml

    from crystalmix.core.tokenizer import load_tokenizer
    from pretrain.cerebras import split_text

    long = " ".join(f"word{i}" for i in range(900))  # > 2000 characters: cut into pieces
    texts = [long, "it\u2019s \u201cquoted\u201d\r\nnext line", *[f"document {i} " * (i + 3) for i in range(60)]]
    folder = tmp_path / "cb"
    folder.mkdir()
    src = {"name": "docs", "paths": [_jsonl(tmp_path / "docs.jsonl", texts)], "ftfy": True}
    tok = load_tokenizer("demo")
    cfg = load_manifest(stage_manifest(folder, sources=[src], mixture={"offline": False}, tokenization="cerebras",
                                       model_vocab_size=len(tok) + 10, normalize=False, seq_len=64))
    assert cfg.tail == "drop"
    summary = build_stage(cfg, folder / "out", LocalExecutor(1), progress=False)
    out = folder / "out" / "docs" / "epoch-0"
    rows = _rows(out)
    assert len(rows) > 10 and (rows[:, 1] == 1).all()  # no padded row: the leftover is dropped
    stream = np.r_[rows[0, 0, :1], rows[:, 2].ravel()]  # labels follow one another across rows
    sp = hdf5.read_metadata(out)["special_tokens"]
    docs = np.split(stream, np.flatnonzero(stream == sp["eos"]) + 1)
    assert all(d[0] == sp["bos"] for d in docs if len(d))  # every document starts with <s>
    first = docs[0][1:-1].tolist()
    pieces = split_text(long)
    assert len(pieces) == 4 and "".join(pieces) == long
    assert all(len(p) >= 2000 for p in pieces[:-1]) and all(p.startswith(" ") for p in pieces[1:])
    assert first == [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    assert summary["rewritten"] == {"docs/epoch-0": {"ftfy_changed": 1}}
    assert "it's \"quoted\"\nnext line" in tok.decode(docs[1][1:-1].tolist())
    params = json.loads((out / "data_params.json").read_text())
    stats = params["h5_dataset_stats"]
    inputs = rows[:, 0]
    assert stats["non_pad_tokens"] == int(((inputs != sp["eos"]) & (inputs != sp["pad"])).sum())
    assert stats["non_pad_tokens"] < hdf5.read_metadata(out)["non_pad_tokens"]  # EOS is not counted there
    assert stats["num_sequences"] == len(rows) and stats["loss_valid_tokens"] == rows[:, 1].sum()
    decoded = [tok.decode(r.tolist(), skip_special_tokens=True) for r in inputs]
    assert stats["detokenized_chars"] == sum(map(len, decoded))
    assert params["post-process"]["vocab_size"] == len(tok) + 10
    assert params["processing"]["chunk_len_to_split"] == 2000 and params["dataset"]["use_ftfy"] is True
    assert hdf5.read_metadata(out)["model_vocab_size"] == len(tok) + 10
    assert yaml.safe_load((folder / "out" / "mixture.yaml").read_text())["vocab_size"] == len(tok) + 10
    assert hdf5.validate_folder(out)[1] == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"tokenization": "cerebras", "tail": "pad"}, "never pads LM rows"),
    ({"tokenization": "cerebras", "sources": [{"name": "py", "paths": [PY], "text_field": "content",
                                               "fim": {"rate": 0.5, "mode": "document"}}]}, "use mode 'llm360'"),
])
def test_cerebras_mode_refuses_what_it_cannot_do(tmp_path: Path, changes: dict, message: str) -> None:
    from crystalmix.core.errors import UserError

    with pytest.raises(UserError, match=message):
        load_manifest(stage_manifest(tmp_path, **changes))


def test_model_vocab_size_below_the_tokenizer_is_refused(tmp_path: Path) -> None:
    from crystalmix.core.errors import UserError

    cfg = load_manifest(stage_manifest(tmp_path, model_vocab_size=100))
    with pytest.raises(UserError, match="smaller than the tokenizer"):
        build_stage(cfg, tmp_path / "out", LocalExecutor(1), progress=False)


def test_llm360_fim_builds_valid_rows_with_the_fake_eos_label(tmp_path: Path) -> None:
    """Cerebras tokenization + LLM360's FIM, end to end: valid files, every FIM count in the metadata."""
    src = {"name": "py", "paths": [PY], "text_field": "content", "ftfy": True, "epochs": 2,
           "fim": {"rate": 0.9, "spm_rate": 0.5, "mode": "llm360"}}
    out = _build(tmp_path, "llm360", [src], tokenization="cerebras")
    for epoch in (0, 1):
        folder = out / "py" / f"epoch-{epoch}"
        rows, problems = hdf5.validate_folder(folder)
        assert problems == [] and rows > 0
    meta = hdf5.read_metadata(out / "py" / "epoch-0")
    assert meta["fim"]["mode"] == "llm360" and meta["fim"]["fim_applied"] > 0
    rows = _rows(out / "py" / "epoch-0")
    sp = meta["special_tokens"]
    kept = rows[:, 0, -1] != sp["pad"]  # not padded: the last label is trained, a fake EOS unless the row grew
    assert kept.any() and (rows[kept, 1, -1] == 1).all() and (rows[kept, 2, -1] == sp["eos"]).sum() > 0
    assert (rows[:, 2, :-1] == rows[:, 0, 1:])[rows[:, 0, 1:] != sp["pad"]].all()
    padded = ~kept
    assert padded.sum() == meta["fim"]["fim_padded_rows"]
    assert not np.array_equal(rows, _rows(out / "py" / "epoch-1")[: len(rows)])  # a fresh pass per epoch


def test_exact_pieces_points_to_the_llm360_mode(tmp_path: Path) -> None:
    from crystalmix.core.errors import UserError

    src = {"name": "py", "paths": [PY], "text_field": "content", "fim": {"rate": 0.5, "exact_pieces": False}}
    with pytest.raises(UserError, match=r"sources\[0\]\.fim\.exact_pieces: exact_pieces was removed.*mode: llm360"):
        load_manifest(stage_manifest(tmp_path, sources=[src]))
    src = {"name": "py", "paths": [PY], "text_field": "content", "fim": {"rate": 0.5, "mode": "llm360"}}
    with pytest.raises(UserError, match="unpadded rows"):
        load_manifest(stage_manifest(tmp_path, sources=[src]))


def test_replayed_folders_join_the_mixture_with_their_data_subset(tmp_path: Path) -> None:
    """Stage-3 style: an earlier stage's folder in mixture.yaml with data_subset; the offline mix takes rows
    only from the subset (the first rows of the sorted files, as Cerebras' reader does)."""
    import yaml

    from crystalmix.core.errors import UserError

    earlier = _build(tmp_path, "stage2", [{"name": "py", "paths": [PY], "text_field": "content"}])
    replayed = earlier / "py" / "epoch-0"
    earlier_rows = _rows(replayed)
    replay = [{"name": "py_replay", "folders": [str(replayed)], "weight": 0.5, "data_subset": "0.0-0.25"}]
    src = [{"name": "css", "paths": [str(DEMO / "starcoder" / "css" / "*.parquet")], "text_field": "content",
            "weight": 0.5}]
    folder = tmp_path / "stage3"
    folder.mkdir()
    cfg = load_manifest(stage_manifest(folder, sources=src, mixture={"offline": True, "shuffle_buffer": 8,
                                                                     "replay": replay}))
    build_stage(cfg, folder / "out", LocalExecutor(1), progress=False)
    mixture = yaml.safe_load((folder / "out" / "mixture.yaml").read_text())["mixture"]
    entry = next(e for e in mixture if e["data_dir"] == str(replayed))
    quarter = int(len(earlier_rows) * 0.25)
    assert entry == {"data_dir": str(replayed), "weight": 0.5, "data_subset": "0.0-0.25", "num_sequences": quarter}
    mixed = _rows(folder / "out" / "mixed")
    allowed = {r.tobytes() for r in earlier_rows[:quarter]}
    later = {r.tobytes() for r in earlier_rows[quarter:]} - allowed
    own = {r.tobytes() for r in _rows(folder / "out" / "css" / "epoch-0")}
    picked = [r.tobytes() for r in mixed if r.tobytes() not in own]
    assert picked and all(r in allowed for r in picked) and not any(r in later for r in picked)

    bad = [{**replay[0], "data_subset": "0.5-0.1"}]
    with pytest.raises(UserError, match=r"stage\.yaml:\d+: mixture\.replay\[0\]\.data_subset"):
        load_manifest(stage_manifest(folder, sources=src, mixture={"replay": bad}))
    missing = [{**replay[0], "folders": [str(tmp_path / "nowhere")]}]
    cfg = load_manifest(stage_manifest(folder, sources=src, mixture={"replay": missing}))
    with pytest.raises(UserError, match="no data-\\*.h5 files"):
        build_stage(cfg, tmp_path / "other", LocalExecutor(1), progress=False)
    cfg = load_manifest(stage_manifest(folder, sources=src, mixture={"replay": replay}, seq_len=128))
    with pytest.raises(UserError, match="rows of length 128"):
        build_stage(cfg, tmp_path / "other2", LocalExecutor(1), progress=False)
