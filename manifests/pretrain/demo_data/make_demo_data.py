"""Regenerate the bundled demo corpora from ../shared/realdata (real third-party text and code).

SlimPajama-style: jsonl.zst chunks of ``{"text", "meta": {"redpajama_set_name"}}`` mixing C4 web pages,
Wikipedia articles and GitHub code (Flask, Rosetta Code C/Go/Java), as SlimPajama chunks mix their sets.
StarCoder-style: one parquet per language with a ``content`` column and repo metadata. Run:
``.venv/bin/python manifests/pretrain/demo_data/make_demo_data.py``, then
``manifests/demo_data/make_demo_tokenizer.py`` (the demo tokenizer learns from these corpora too).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent
REAL = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "realdata"
EXT = {"Python": ".py", "JavaScript": ".js", "C": ".c", "Go": ".go", "Java": ".java"}


def slimpajama_records() -> list[dict]:
    recs = []
    for line in (REAL / "llama_factory" / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines():
        recs.append({"text": json.loads(line)["text"], "meta": {"redpajama_set_name": "RedPajamaC4"}})
    for line in (REAL / "llama_factory" / "wiki_demo.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            recs.append({"text": line, "meta": {"redpajama_set_name": "RedPajamaWikipedia"}})
    for lang in ("C", "Go", "Java"):
        for f in sorted((REAL / "rosettacode" / "Task").glob(f"*/{lang}/*{EXT[lang]}")):
            recs.append({"text": f.read_text(encoding="utf-8", errors="replace"),
                         "meta": {"redpajama_set_name": "RedPajamaGithub"}})
    return recs


def starcoder_rows() -> dict[str, list[dict]]:
    langs: dict[str, list[dict]] = {"python": [], "javascript": [], "html": [], "css": []}
    ext_lang = {".py": "python", ".js": "javascript", ".html": "html", ".css": "css"}
    docs = REAL / "code_documents"
    for f in sorted(docs.rglob("*")):
        lang = ext_lang.get(f.suffix)
        if lang and f.is_file():
            repo = "pallets/flask" if f.relative_to(docs).parts[0] == "flask" else "mdn/learning-area"
            langs[lang].append(_row(f.read_text(encoding="utf-8"), repo, str(f.relative_to(docs))))
    for lang, key in (("Python", "python"), ("JavaScript", "javascript")):
        for f in sorted((REAL / "rosettacode" / "Task").glob(f"*/{lang}/*{EXT[lang]}")):
            langs[key].append(_row(f.read_text(encoding="utf-8", errors="replace"), "acmeism/RosettaCodeData",
                                   str(f.relative_to(REAL / "rosettacode"))))
    return langs


def _row(content: str, repo: str, path: str) -> dict:
    return {"max_stars_repo_path": path, "max_stars_repo_name": repo, "max_stars_count": 0,
            "id": f"{repo}/{path}", "content": content}


def main() -> None:
    rng = random.Random(360)
    recs = slimpajama_records()
    rng.shuffle(recs)
    recs.insert(7, {"text": "", "meta": {"redpajama_set_name": "RedPajamaC4"}})  # real dumps hold a few
    out = HERE / "slimpajama"
    out.mkdir(parents=True, exist_ok=True)
    half = len(recs) // 2
    for i, part in enumerate((recs[:half], recs[half:])):
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode("utf-8")
        (out / f"example_train_{i}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(blob))
    for lang, rows in starcoder_rows().items():
        d = HERE / "starcoder" / lang
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "train-00000-of-00001.parquet", compression="zstd")


if __name__ == "__main__":
    main()
