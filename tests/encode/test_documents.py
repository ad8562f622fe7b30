"""Documents through templating, packing and the tokenize stage: BOS + text + EOS, every token trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crystalmix.core.records import Conversation, Message, make_document
from sft_builder.chat import ChatEncoder, Encoded, load_template
from sft_builder.encode import TokenizeConfig, run_tokenize
from sft_builder.pack import PackStats, pack_bfd, pack_llm360, pack_none

BOOK = "\n\n# Sorting\n\nA list is sorted when each item is at most the next one. Use `sorted(xs)` in Python.\n"


def chat(i: int) -> Conversation:
    return Conversation(f"c{i}", "chat", (Message("user", f"question {i}?"), Message("assistant", f"answer {i}.")))


def test_documents_bypass_the_template(demo_tokenizer) -> None:  # noqa: ANN001
    enc = ChatEncoder(demo_tokenizer, load_template("crystalchat"))
    docs = [make_document("d1", "books", BOOK, {}), make_document("d2", "books", "Literal <|im_end|> text", {})]
    out = enc.encode([chat(0), docs[0], chat(1), docs[1]])
    assert [o.id for o in out] == ["c0", "d1", "c1", "d2"], "one result per record, in order"
    assert all(isinstance(o, Encoded) for o in out)
    bos, eos = demo_tokenizer.bos_token_id, demo_tokenizer.eos_token_id
    for o, d in ((out[1], docs[0]), (out[3], docs[1])):
        body = demo_tokenizer(d.text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert o.input_ids.tolist() == [bos, *body, eos]
        assert o.loss_mask.tolist() == [1] * (len(body) + 2) and o.document
    assert demo_tokenizer.convert_tokens_to_ids("<|im_end|>") not in out[3].input_ids.tolist(), \
        "special-token text in a document stays text"
    assert not out[0].document and out[0].loss_mask[0] == 0


def test_llm360_packing_trains_the_label_that_starts_a_document(demo_tokenizer) -> None:  # noqa: ANN001
    enc = ChatEncoder(demo_tokenizer, load_template("crystalchat"))
    items = [o for o in enc.encode([chat(0), make_document("d", "b", BOOK, {}), chat(1)]) if isinstance(o, Encoded)]
    total = sum(len(i.input_ids) for i in items)
    rows = list(pack_llm360(items, total - 1, PackStats()))  # one row holds the whole stream
    assert len(rows) == 1
    ids, mask, labels = rows[0][0], rows[0][1], rows[0][2]
    bos = demo_tokenizer.bos_token_id
    starts = [k for k in range(len(labels)) if labels[k] == bos]
    doc_start = len(items[0].input_ids) - 1  # the label of this position is the document's <s>
    assert doc_start in starts and mask[doc_start] == 1
    next_chat = len(items[0].input_ids) + len(items[1].input_ids) - 1
    assert labels[next_chat] == bos and mask[next_chat] == 0, "a conversation's <s> label is never trained"
    n = len(items[1].input_ids)
    assert mask[doc_start:doc_start + n].tolist() == [1] * n, "every label of the document is trained"
    np.testing.assert_array_equal(ids[doc_start + 1:doc_start + 1 + n], items[1].input_ids)


def test_long_documents_are_cut_not_truncated() -> None:
    ids = np.arange(1, 26, dtype=np.int32)
    doc = Encoded("d", "b", ids, np.ones(25, np.int8), np.zeros(0, np.int64), document=True)
    for packer in (lambda s: pack_bfd([doc], 10, 0, s), lambda s: pack_none([doc], 10, 0, s)):
        stats = PackStats()
        rows = list(packer(stats))
        assert stats.counts["split_documents"] == 1 and not stats.counts["truncated_tokens"]
        got = sorted(int(t) for r in rows for t, seg in zip(r[0], r[3], strict=True) if seg)
        assert got == ids.tolist(), "every token of the document is in some row"
        for r in rows:  # labels never cross a piece, every other label is trained
            seg, mask = r[3], r[1]
            for k in range(9):
                assert mask[k] == (seg[k] != 0 and seg[k] == seg[k + 1])


def test_tokenize_stage_counts_documents(demo_tokenizer_dir: Path, tmp_path: Path) -> None:
    records = [chat(0), make_document("d", "books", BOOK, {}), chat(1)]
    cfg = TokenizeConfig.from_mapping({"tokenizer": str(demo_tokenizer_dir), "seq_len": 64, "workers": 1,
                                       "output": "megatron-jsonl", "packing": "bfd"})
    stats = run_tokenize(iter(records), cfg, tmp_path, seed=1, fingerprint="f")
    assert stats["per_source"]["books"]["documents"] == 1 and stats["per_source"]["chat"]["documents"] == 0
    books = stats["per_source"]["books"]
    assert books["tokens"] == books["trained_tokens"]
    rows = [json.loads(line) for f in sorted(tmp_path.glob("data-*.jsonl")) for line in f.read_text().splitlines()]
    # padded rows: labels stay inside a record, so a document's <s> label is the one trained token not in a row
    assert sum(sum(r["loss_mask"]) for r in rows) == sum(s["trained_tokens"] - s["documents"]
                                                         for s in stats["per_source"].values())
