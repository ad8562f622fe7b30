"""Documents against LLM360's real packed CrystalChat SFT rows (issue 11's proof for the textbook subsets).

A document starts where a row's label is ``<s>`` not followed by ``<|sys_start|>``. Each of the 21 that start
inside the sample's rows is decoded from its ``<s>`` to the row's end and that text is encoded through our
document path (the `text` adapter's record, `ChatEncoder`): the ids must be LLM360's (the last token, cut by
the row's end, aside) and the mask ones from the ``<s>`` label on. Then our ``llm360`` packing of such a
document behind a conversation must train that ``<s>`` label, as the sample does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crystalmix.core.records import Conversation
from sft_builder.chat import ChatEncoder, Encoded, load_template
from sft_builder.pack import PackStats, pack_llm360
from sft_builder.sources.base import make_adapter

SAMPLE = "llm360/crystalcoder_sft_merged_shuffle_train_sample.jsonl"
BOS, EOS, SYS_START = 1, 2, 32020
CHAT_MARKERS = {32018, 32019, 32020, 32021}


def _document_starts(rows: list[dict]) -> list[tuple[int, int]]:
    """(row, position) of every label ``<s>`` that starts a document, not a conversation."""
    return [(i, k) for i, r in enumerate(rows) for k, lab in enumerate(r["label_ids"])
            if lab == BOS and (k + 1 == len(r["label_ids"]) or r["label_ids"][k + 1] != SYS_START)]


def test_documents_in_llm360_rows_encode_to_the_same_ids(realdata: Path, tmp_path: Path) -> None:
    from crystalmix.core.tokenizer import load_tokenizer

    tok = load_tokenizer(realdata / "tokenizers" / "crystalcoder")
    encoder = ChatEncoder(tok, load_template("crystalchat"))
    rows = [json.loads(line) for line in (realdata / SAMPLE).read_text().splitlines()]
    starts = _document_starts(rows)
    assert len(starts) == 21
    # The decoded texts become a folder of text files, read by the `text` adapter: the document path end to end.
    expected = []
    for n, (i, k) in enumerate(starts):
        labels, mask = rows[i]["label_ids"], rows[i]["loss_mask"]
        ids = labels[k:]  # the document's <s>, then its tokens to the row's end (labels are inputs shifted)
        assert not set(ids) & CHAT_MARKERS and EOS not in ids, "a plain document, cut by the row's end"
        assert mask[k:] == [1] * len(ids), "every label trained, the <s> label included"
        text = tok.backend_tokenizer.decode(ids[1:], skip_special_tokens=False)
        (tmp_path / f"doc{n:02d}.md").write_bytes(text.encode("utf-8"))
        expected.append(ids)
    docs = [d for d in make_adapter("text", {}).stream([str(tmp_path)]) if isinstance(d, Conversation)]
    assert len(docs) == 21 and all(d.kind == "document" for d in docs)
    exact = 0
    for ids, enc in zip(expected, encoder.encode(docs), strict=True):
        assert isinstance(enc, Encoded) and enc.document
        got = enc.input_ids.tolist()
        assert got[0] == BOS and got[-1] == EOS
        assert got[:len(ids) - 1] == ids[:-1], "same ids up to the token the row's end cut"
        exact += got[len(ids) - 1] == ids[-1]
        assert enc.loss_mask.tolist() == [1] * len(got)
    # The cut token could differ (the row's end may split a word); on this sample it never does.
    assert exact == 21, exact


def test_llm360_packing_trains_a_documents_bos_label_as_the_sample_does(realdata: Path) -> None:
    from crystalmix.core.tokenizer import load_tokenizer

    tok = load_tokenizer(realdata / "tokenizers" / "crystalcoder")
    encoder = ChatEncoder(tok, load_template("crystalchat"))
    rows = [json.loads(line) for line in (realdata / SAMPLE).read_text().splitlines()]
    i, k = _document_starts(rows)[0]
    labels = rows[i]["label_ids"]
    text = tok.backend_tokenizer.decode(labels[k + 1:], skip_special_tokens=False)
    chat = Conversation.from_dict({"id": "c", "source": "s", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]})
    doc = Conversation.from_dict({"id": "d", "source": "books", "text": text})
    items = [e for e in encoder.encode([chat, doc]) if isinstance(e, Encoded)]
    seq_len = sum(len(e.input_ids) for e in items) - 1  # one row holds the whole stream
    row = next(pack_llm360(items, seq_len, PackStats()))
    at = len(items[0].input_ids) - 1  # the position whose label is the document's <s>
    assert row[2][at] == BOS and row[1][at] == 1, "the <s> label that starts a document is trained"
    assert row[1][:at].tolist() == items[0].loss_mask[1:].tolist()
    # from the <s> label on, the row is the sample's document, label for label, with LLM360's mask
    n = len(labels) - k - 1  # the cut token aside
    np.testing.assert_array_equal(row[2][at:at + n], labels[k:k + n])
    assert row[1][at:at + n].tolist() == rows[i]["loss_mask"][k:k + n]
