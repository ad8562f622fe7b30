"""Conversations to token ids and loss masks, through Jinja chat templates (the ``crystalmix.templates`` package);
documents bypass the template (BOS + text + EOS, all trained).

Templates are rendered by transformers' chat-template machinery (`render_jinja_template`, what
``apply_chat_template`` runs) and mark trained spans with ``{% generation %}`` blocks, so masks come from
the template, not from per-model code. For speed a whole batch is rendered, then encoded with one
`tokenizers` call, ``encode_batch_fast`` (ids only): span edges at control tokens (CrystalChat) are placed by
the control tokens' positions, edges inside ordinary text (ChatML's ``assistant\n``, Llama-2's ``[/INST] ``)
by the tokens' lengths read off the vocabulary (`_Aligner` and `_Lengths`, checked per conversation). A
conversation or tokenizer that fails those checks falls back to the token offsets of ``encode_batch``.

Control tokens written inside message text (a user pasting ``<|im_end|>``) must stay plain text: before
rendering they are swapped for same-length private-use placeholders, so the template's own control tokens
are the only ones matched; conversations that had any are encoded piece by piece with a tokenizer that
reads special-token text literally (`crystalmix.core.tokenizer.private_tokenizer`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, InvalidRecordError, Rejected
from crystalmix.core.tokenizer import private_tokenizer

TEMPLATES_PACKAGE = "crystalmix.templates"  # the repository's templates/, installed as package data
TOKENIZER_TEMPLATE = "tokenizer"  # template name meaning "the tokenizer's own chat_template"
_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")
_MARK = "\U0010fffd"  # starts every placeholder; a message containing it is rejected
_PLACEHOLDER_BASE = 0xF0000

TrainOn = Literal["all", "last"]
Rendered = tuple[list[str], list[list[tuple[int, int]]], list[bool]]


def template_names() -> list[str]:
    """Bundled template names, plus ``tokenizer``."""
    bundled = (f.name for f in files(TEMPLATES_PACKAGE).iterdir() if f.is_file())
    return sorted(name.removesuffix(".jinja") for name in bundled if name.endswith(".jinja")) + [TOKENIZER_TEMPLATE]


def load_template(spec: str, tokenizer: Any = None) -> str:
    """Template source for a bundled name, a ``.jinja`` path, or ``tokenizer`` (its own chat_template).

    Raises `UserError` when the template cannot be found or marks no ``{% generation %}`` span (its masks
    would be all zero).
    """
    if spec == TOKENIZER_TEMPLATE:
        source = getattr(tokenizer, "chat_template", None)
        if not isinstance(source, str) or not source:
            raise UserError("template 'tokenizer': this tokenizer has no chat_template; pick one of "
                            + ", ".join(template_names()[:-1]))
        name = "the tokenizer's chat_template"
    else:
        path = Path(spec)
        if path.suffix == ".jinja":
            if not path.is_file():
                raise UserError("chat template file not found", path=path)
            source, name = path.read_text(encoding="utf-8"), str(path)
        elif spec in template_names()[:-1]:
            source = files(TEMPLATES_PACKAGE).joinpath(f"{spec}.jinja").read_text(encoding="utf-8")
            name = f"template {spec!r}"
        else:
            raise UserError(f"unknown chat template {spec!r}; use one of {', '.join(template_names())} "
                            "or a path to a .jinja file")
    if not _GENERATION_RE.search(source):
        raise UserError(f"{name} marks no {{% generation %}} block, so no token would be trained; wrap "
                        "each assistant answer and its stop token in {% generation %}...{% endgeneration %}")
    return source


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized conversation: ids from BOS to the final stop token, and the per-token loss mask.

    `turn_starts` are token offsets where a new turn begins (after each trained span), the places where a
    conversation too long for one row may be cut.
    """

    id: str
    source: str
    input_ids: np.ndarray  # int32
    loss_mask: np.ndarray  # int8, 1 = this token is a training target
    turn_starts: np.ndarray  # int64
    document: bool = False  # a plain document (no turns): a long one is cut anywhere, not at turn starts


STEP = "tokenize"  # the step named in the rejects of conversations that yield no training example


class ChatEncoder:
    """Encodes batches of `Conversation` with one tokenizer and one template.

    Args:
        tokenizer: a transformers fast tokenizer (see `crystalmix.core.tokenizer.load_tokenizer`).
        template: template source (see `load_template`).
        train_on: ``all`` assistant turns (default) or only the ``last``.
        train_on_prompt: also train on system/user turns and markers (off by default).
    """

    def __init__(self, tokenizer: Any, template: str, *, train_on: TrainOn = "all",
                 train_on_prompt: bool = False) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on
        self.train_on_prompt = train_on_prompt
        # Private copies: the template's control tokens are matched by `control`; `plain` reads
        # special-token text as ordinary text (content that was escaped).
        spec = tokenizer.backend_tokenizer.to_str()
        self.control = private_tokenizer(spec, literal=False)
        self.plain = private_tokenizer(spec, literal=True)
        specials = {i: t.content for i, t in self.control.get_added_tokens_decoder().items() if t.special}
        self.special_set = frozenset(specials)
        self.special_by_text = {text: i for i, text in specials.items()}
        escapable = sorted((t for t in specials.values() if len(t) >= 2), key=lambda t: (-len(t), t))
        # Same length as the token text, so character offsets in the rendered text stay true.
        self._to_placeholder = {t: _MARK + chr(_PLACEHOLDER_BASE + k) * (len(t) - 1)
                                for k, t in enumerate(escapable)}
        self._from_placeholder = {v: k for k, v in self._to_placeholder.items()}
        self._special_re = _alternation(escapable)
        self._placeholder_re = _alternation(list(self._from_placeholder))
        self.template_vars = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        self.bos_id = tokenizer.convert_tokens_to_ids(tokenizer.bos_token) if tokenizer.bos_token else None
        self.eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
        self._aligner = _Aligner.of(self.control)

    # -- rendering -----------------------------------------------------------------------------------
    def _messages(self, conv: Conversation) -> tuple[list[dict[str, str]], bool]:
        out, escaped = [], False
        for m in conv.messages:
            text = m.content
            if _MARK in text:
                raise InvalidRecordError("reserved_character", "message contains U+10FFFD")
            if self._special_re is not None and self._special_re.search(text):
                text = self._special_re.sub(lambda mt: self._to_placeholder[mt.group(0)], text)
                escaped = True
            out.append({"role": m.role, "content": text})
        return out, escaped

    def render(self, convs: Sequence[Conversation]) -> Rendered:
        """Rendered texts (content's control tokens as placeholders), generation spans, escaped flags."""
        chats, escaped = [], []
        for c in convs:
            msgs, esc = self._messages(c)
            chats.append(msgs)
            escaped.append(esc)
        texts, spans = self._render(chats)
        return texts, spans, escaped

    def _render(self, chats: list[list[dict[str, str]]]) -> tuple[list[str], list[list[tuple[int, int]]]]:
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            return render_jinja_template(conversations=chats, chat_template=self.template,
                                         return_assistant_tokens_mask=True, **self.template_vars)
        except Exception as exc:  # jinja errors (raise_exception, undefined names) are template problems
            if type(exc).__module__.startswith("jinja2") or "TemplateError" in type(exc).__name__:
                raise UserError(f"chat template failed: {exc}") from None
            raise

    def _unescape(self, text: str) -> str:
        return self._placeholder_re.sub(lambda mt: self._from_placeholder[mt.group(0)], text)

    # -- encoding ------------------------------------------------------------------------------------
    def encode(self, convs: Sequence[Conversation]) -> list[Encoded | Rejected]:
        """Encode a batch: one result per conversation, in order, either its `Encoded` or its `Rejected` (a
        conversation that yields no training example). A result does not depend on the rest of the batch."""
        results: list[Encoded | Rejected | None] = [None] * len(convs)
        ok: list[int] = []
        chats: list[list[dict[str, str]]] = []
        escaped: list[bool] = []
        docs: list[int] = []
        for i, c in enumerate(convs):
            if c.kind == "document":
                docs.append(i)
                continue
            try:
                msgs, esc = self._messages(c)
            except InvalidRecordError as exc:
                results[i] = Rejected.of(c, STEP, exc.reason, exc.detail)
                continue
            ok.append(i)
            chats.append(msgs)
            escaped.append(esc)
        if chats:
            texts, spans = self._render(chats)
            plain_idx = [k for k, e in enumerate(escaped) if not e]
            esc_idx = [k for k, e in enumerate(escaped) if e]
            if self._aligner is not None:  # ids only; masks from the control tokens' places (see `_Aligner`)
                fits, unaligned = [], []
                for k in plain_idx:
                    (fits if self._aligner.fits(texts[k], spans[k]) else unaligned).append(k)
                batch = self.control.encode_batch_fast([texts[k] for k in fits], add_special_tokens=False)
                for k, enc in zip(fits, batch, strict=True):
                    ids = np.array(enc.ids, dtype=np.int32)
                    ranges = self._aligner.ranges(texts[k], ids, spans[k])
                    if ranges is None:
                        unaligned.append(k)
                    else:
                        results[ok[k]] = self._finish_ranges(convs[ok[k]], ids, ranges)
                plain_idx = sorted(unaligned)
            toks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            batch = self.control.encode_batch([texts[k] for k in plain_idx], add_special_tokens=False)
            for k, enc in zip(plain_idx, batch, strict=True):
                n = len(enc.ids)
                ids = np.fromiter(enc.ids, dtype=np.int64, count=n)
                offsets = np.fromiter(chain.from_iterable(enc.offsets), dtype=np.int64, count=2 * n)
                toks[k] = (ids, offsets.reshape(n, 2))
            if esc_idx:
                toks.update(zip(esc_idx, self._encode_escaped([texts[k] for k in esc_idx]), strict=True))
            for k, (ids, offsets) in toks.items():
                results[ok[k]] = self._finish(convs[ok[k]], ids, offsets, spans[k])
        if docs:
            for i, enc in zip(docs, self.encode_documents([convs[i] for i in docs]), strict=True):
                results[i] = enc
        return [r for r in results if r is not None]

    def encode_documents(self, docs: Sequence[Conversation]) -> list[Encoded]:
        """Documents bypass the chat template: BOS + text + EOS, every token trained (the BOS too, so packing
        that concatenates records, like LLM360's, trains the label that starts a document, as their data does).

        The text is encoded as it is, without the tokenizer's own special tokens (its post-processor), and
        special-token text inside it stays plain text, as in a message.
        """
        if self.eos_id is None:
            raise UserError("a document ends with the tokenizer's EOS token, and this tokenizer has none")
        head = np.asarray([] if self.bos_id is None else [self.bos_id], dtype=np.int32)
        tail = np.asarray([self.eos_id], dtype=np.int32)
        out = []
        texts = [d.text or "" for d in docs]
        for d, enc in zip(docs, self.plain.encode_batch_fast(texts, add_special_tokens=False), strict=True):
            ids = np.concatenate([head, np.asarray(enc.ids, dtype=np.int32), tail])
            out.append(Encoded(d.id, d.source, ids, np.ones(len(ids), dtype=np.int8), np.zeros(0, dtype=np.int64),
                               document=True))
        return out

    def _encode_escaped(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split at the template's control tokens; encode the text between them literally, in one batch."""
        assert self._special_re is not None
        plan: list[list[tuple[int, int, int]]] = []  # per text: (start, end, special id or -1)
        pieces: list[str] = []
        for text in texts:
            parts, pos = [], 0
            for mt in self._special_re.finditer(text):
                if mt.start() > pos:
                    parts.append((pos, mt.start(), -1))
                parts.append((mt.start(), mt.end(), self.special_by_text[mt.group(0)]))
                pos = mt.end()
            if pos < len(text):
                parts.append((pos, len(text), -1))
            for s, e, sid in parts:
                if sid < 0:
                    pieces.append(self._unescape(text[s:e]))
            plan.append(parts)
        encoded = iter(self.plain.encode_batch(pieces, add_special_tokens=False))
        out = []
        for parts in plan:
            ids: list[int] = []
            offs: list[tuple[int, int]] = []
            for s, e, sid in parts:
                if sid >= 0:
                    ids.append(sid)
                    offs.append((s, e))
                else:
                    enc = next(encoded)
                    ids.extend(enc.ids)
                    offs.extend((s + a, s + b) for a, b in enc.offsets)
            out.append((np.asarray(ids, dtype=np.int64), np.asarray(offs, dtype=np.int64).reshape(-1, 2)))
        return out

    def _check_bos(self, ids: np.ndarray) -> None:
        if self.bos_id is not None and len(ids) >= 2 and ids[0] == self.bos_id and ids[1] == self.bos_id:
            raise UserError("double BOS: the template writes bos_token and the text already starts with it; "
                            "remove one of them")

    def _check_stop(self, ids: np.ndarray, last_trained: int) -> None:
        if int(ids[last_trained]) not in self.special_set:
            raise UserError("the template's last trained token is not a stop token (EOS or end-of-turn), so "
                            "the model would never learn to stop: put the stop token inside {% generation %}")

    def _finish_ranges(self, conv: Conversation, ids: np.ndarray,
                       ranges: list[tuple[int, int]]) -> Encoded | Rejected:
        """`_finish` for spans already mapped to token ranges ``[lo, hi)``, one per non-empty span, in order."""
        self._check_bos(ids)
        trained = [r for r in ranges if r[1] > r[0]]
        if not trained:
            return Rejected.of(conv, STEP, "no_trained_tokens", "the template marks no token of it as trained")
        self._check_stop(ids, trained[-1][1] - 1)
        n = len(ids)
        if self.train_on_prompt:
            mask = np.ones(n, dtype=np.int8)
        else:
            mask = np.zeros(n, dtype=np.int8)
            for lo, hi in ranges[-1:] if self.train_on == "last" else trained:
                mask[lo:hi] = 1
        turn_starts = np.array([hi for _, hi in ranges if 0 < hi < n], dtype=np.int64)
        return Encoded(conv.id, conv.source, ids, mask, turn_starts)

    def _finish(self, conv: Conversation, ids: np.ndarray, offsets: np.ndarray,
                spans: list[tuple[int, int]]) -> Encoded | Rejected:
        self._check_bos(ids)
        span_arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        span_arr = span_arr[span_arr[:, 1] > span_arr[:, 0]]
        trained = _overlap_mask(offsets, span_arr)
        if not trained.any():
            return Rejected.of(conv, STEP, "no_trained_tokens", "the template marks no token of it as trained")
        self._check_stop(ids, int(np.flatnonzero(trained)[-1]))
        if self.train_on == "last":
            trained = _overlap_mask(offsets, span_arr[-1:])
        turn_starts = np.searchsorted(offsets[:, 0], span_arr[:, 1], side="left")
        turn_starts = turn_starts[(turn_starts > 0) & (turn_starts < len(ids))]  # sorted, as spans are
        mask = np.ones(len(ids), dtype=np.int8) if self.train_on_prompt else trained.astype(np.int8)
        return Encoded(conv.id, conv.source, ids.astype(np.int32), mask, turn_starts)


def _alternation(strings: list[str]) -> re.Pattern[str] | None:
    if not strings:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(strings, key=lambda s: (-len(s), s))))


def _overlap_mask(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Tokens whose character range overlaps one of the sorted, disjoint `spans`."""
    if len(spans) == 0 or len(offsets) == 0:
        return np.zeros(len(offsets), dtype=bool)
    starts, ends = offsets[:, 0], offsets[:, 1]
    j = np.searchsorted(spans[:, 1], starts, side="right")  # first span ending after the token starts
    inside = j < len(spans)
    jj = np.minimum(j, len(spans) - 1)
    # A zero-width token (never produced in practice) counts when its position lies in the span.
    return inside & ((spans[jj, 0] < ends) | ((ends == starts) & (spans[jj, 0] <= starts)))


@dataclass(frozen=True, slots=True)
class _Aligner:
    """Maps generation spans to token ranges without token offsets, so the batch is tokenized by
    ``encode_batch_fast`` (ids only; 1.3 to 1.6 times as fast as ``encode_batch`` in bench/encode.py).

    Edges at an added token (CrystalChat's answers lie between ``<|im_end|>`` and ``<|im_start|>`` or
    ``</s>``): the tokenizer cuts the text at added tokens first, each occurrence becomes exactly one token,
    and the text between two of them becomes tokens whose characters lie between them. So the k-th added
    token found in the text (leftmost-longest, as the tokenizer's own matcher) is the k-th added id in the
    ids, and an edge at its start or end is a token edge. This holds only when no added token strips spaces,
    matches whole words only, or is matched after normalization (`of` refuses those tokenizers), and it is
    checked per text: the added ids found must be, in order, those of the matched texts.

    Edges inside ordinary text (ChatML's answers start after ``assistant\n``, Llama-2's after ``[/INST]``):
    placed by `_Lengths`, each token's length in UTF-8 bytes of the original text, when the tokenizer is one
    whose token strings spell out the text they cover (`_Lengths.of`); every text piece's summed length is
    checked against its real length. Whatever fails a check goes the offsets way, so the result is always
    what token offsets give. Tokens must cover at least one character: a post-processor that trims offsets
    (GPT-2's ByteLevel) makes whitespace tokens that do not, so `of` refuses those tokenizers.
    """

    split: Any  # re.Pattern.split of the added tokens' texts, in a capture group: [text, token, text, ...]
    id_of: dict[str, int]
    is_added: np.ndarray  # bool, indexed by token id
    texts: tuple[str, ...]  # the added tokens' texts
    lengths: _Lengths | None  # None: an edge inside ordinary text needs the offsets

    @classmethod
    def of(cls, tok: Any) -> _Aligner | None:
        added = tok.get_added_tokens_decoder()
        plain = all(t.content and not (t.normalized or t.lstrip or t.rstrip or t.single_word) for t in added.values())
        pattern = _alternation([t.content for t in added.values()])
        if not plain or pattern is None or _trims_offsets(tok):
            return None
        size = max(tok.get_vocab_size(with_added_tokens=True), max(added) + 1)
        is_added = np.zeros(size, dtype=bool)
        is_added[list(added)] = True
        return cls(re.compile(f"({pattern.pattern})").split, {t.content: i for i, t in added.items()}, is_added,
                   tuple(t.content for t in added.values()), _Lengths.of(tok, size))

    def fits(self, text: str, spans: list[tuple[int, int]]) -> bool:
        """Whether the spans can be placed without offsets: a look at the text alone, before tokenizing, so
        a text that cannot is tokenized once, with offsets. `ranges` still checks against the ids."""
        if self.lengths is not None:
            return self.lengths.readable(text)
        end = len(text)
        return all(b in (0, end) or text.startswith(self.texts, b) or text.endswith(self.texts, 0, b)
                   for s, e in spans if e > s for b in (s, e))

    def ranges(self, text: str, ids: np.ndarray, spans: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        """Token range ``[lo, hi)`` of each non-empty span, or None when this text must use offsets."""
        spans = [(s, e) for s, e in spans if e > s]
        if not spans:
            return []
        places = np.flatnonzero(self.is_added[ids])
        pieces = self.split(text)
        names = pieces[1::2]
        if len(names) != len(places) or ids[places].tolist() != list(map(self.id_of.__getitem__, names)):
            return None
        ends = list(accumulate(map(len, pieces)))  # each piece's end: added tokens are the odd pieces
        edge = {0: 0, **dict(zip(ends[0:-1:2], places.tolist(), strict=True)),
                **dict(zip(ends[1::2], (places + 1).tolist(), strict=True)), len(text): len(ids)}
        out, prev = [], 0
        bounds: tuple[np.ndarray, np.ndarray] | None = None
        for s, e in spans:
            lo, hi = edge.get(s), edge.get(e)
            if lo is None or hi is None:  # inside ordinary text: by the tokens' lengths
                if bounds is None:
                    bounds = self.lengths.bounds(text, ids, places, pieces) if self.lengths is not None else None
                    if bounds is None:
                        return None
                starts, stops = bounds
                if lo is None:  # the first token ending after the edge (a token across it is trained)
                    lo = int(np.searchsorted(stops, _byte_at(text, s), side="right"))
                if hi is None:  # past the last token starting before the edge
                    hi = int(np.searchsorted(starts, _byte_at(text, e), side="left"))
            if s < prev:
                return None
            out.append((lo, hi))
            prev = e
        return out


_SENTINEL = -(1 << 40)  # the length of a token whose text is unknown (unk): fails every length check


@dataclass(frozen=True, slots=True)
class _Lengths:
    """How many UTF-8 bytes of the original text each token covers, read off the vocabulary, for the BPE
    tokenizers (no dropout, no subword affixes) whose token strings spell that text out:

    - SentencePiece-style (CrystalCoder's layout): at most a one-character `Prepend` and a one-character
      `Replace` (``" "`` to ``"▁"``), optionally a Metaspace split that prepends nothing. A byte-fallback token
      ``<0x..>`` covers one byte, ``▁`` the space it replaced, and the first token of each piece of text also
      holds the prepended ``▁``, which covers nothing. A text that holds ``▁`` itself (three bytes there)
      is left to the offsets (`foreign`).
    - byte-level (GPT-2's and Qwen's layouts): a ByteLevel pre-tokenizer that adds no space, after splits that
      drop nothing; each character of a token is one byte. An NFC normalizer (Qwen's) changes nothing in a
      text that is already NFC; any other text is left to the offsets.

    Then the tokens of a piece of text partition it; `bounds` checks, per text, that every piece's summed
    length is its real length.
    """

    units: np.ndarray  # int64 by token id: bytes covered (`_SENTINEL` when unknown)
    phantom: int  # bytes counted in the first token of each piece for the prepended character
    foreign: str | None  # a character whose presence in the text breaks the reading
    nfc: bool = False  # the reading holds only for NFC text

    @classmethod
    def of(cls, tok: Any, size: int) -> _Lengths | None:
        spec = json.loads(tok.to_str())
        model = spec.get("model") or {}
        if (model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix")
                or model.get("end_of_word_suffix")):
            return None
        table = np.full(size, _SENTINEL, dtype=np.int64)
        pre, norm = spec.get("pre_tokenizer"), spec.get("normalizer")
        if _byte_level(pre):
            if norm is not None and norm.get("type") != "NFC":
                return None
            for piece, i in tok.get_vocab(with_added_tokens=False).items():
                table[i] = len(piece)
            return cls._with_added(tok, table, model.get("unk_token"), 0, None, nfc=norm is not None)
        prepend: str | None = None
        replace: tuple[str, str] | None = None
        for step in ([] if norm is None else norm.get("normalizers", [norm]) if norm["type"] == "Sequence"
                     else [norm]):
            if step["type"] == "Prepend" and prepend is None and replace is None and len(step["prepend"]) == 1:
                prepend = step["prepend"]
            elif (step["type"] == "Replace" and replace is None and len(step["content"]) == 1
                  and len(step["pattern"].get("String") or "") == 1):
                replace = (step["pattern"]["String"], step["content"])
            else:
                return None
        if pre is not None:  # Metaspace that prepends nothing: replaces spaces (as `replace` does), then splits
            if pre["type"] != "Metaspace" or pre.get("prepend_scheme") != "never" or len(pre["replacement"]) != 1:
                return None
            if replace not in (None, (" ", pre["replacement"])):
                return None
            replace = (" ", pre["replacement"])
        source, shown = replace if replace is not None and replace[0] != replace[1] else ("", "")

        def units(piece: str) -> int:
            return sum(len(source.encode()) if c == shown else len(c.encode()) for c in piece)

        fallback = bool(model.get("byte_fallback"))
        for piece, i in tok.get_vocab(with_added_tokens=False).items():
            byte = fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
            table[i] = 1 if byte else units(piece)
        phantom = 0 if prepend is None else units(prepend if replace is None else prepend.replace(*replace))
        return cls._with_added(tok, table, model.get("unk_token"), phantom, shown or None)

    @classmethod
    def _with_added(cls, tok: Any, table: np.ndarray, unk: str | None, phantom: int, foreign: str | None,
                    nfc: bool = False) -> _Lengths:
        if unk is not None and tok.token_to_id(unk) is not None:  # stands for any text: no length
            table[tok.token_to_id(unk)] = _SENTINEL
        # Added tokens are matched before normalization: their own text. An added unk the model emits is an
        # added id no added text matched, which `_Aligner.ranges` refuses.
        for i, t in tok.get_added_tokens_decoder().items():
            table[i] = len(t.content.encode())
        return cls(table, phantom, foreign, nfc)

    def readable(self, text: str) -> bool:
        """Whether this text can be read by token lengths at all (a look at the text alone)."""
        if self.foreign is not None and self.foreign in text:
            return False
        return not self.nfc or unicodedata.is_normalized("NFC", text)

    def bounds(self, text: str, ids: np.ndarray, places: np.ndarray,
               pieces: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Each token's start and end, in UTF-8 bytes of `text`; None when a piece's length does not add up
        (`pieces` alternate text and added tokens, `places` are the added tokens' indexes in `ids`)."""
        if not self.readable(text):
            return None
        units = self.units[ids]
        if self.phantom:
            added = self.is_added_at(places, len(ids))
            first = ~added
            first[1:] &= added[:-1]
            units = units - self.phantom * first
        stops = np.cumsum(units)
        lens = map(len, pieces) if text.isascii() else (len(p.encode()) for p in pieces)
        piece_ends = np.fromiter(accumulate(lens), dtype=np.int64, count=len(pieces))
        total = int(stops[-1]) if len(stops) else 0
        if total != (int(piece_ends[-1]) if len(pieces) else 0) or not np.array_equal(stops[places],
                                                                                        piece_ends[1::2]):
            return None
        return stops - units, stops

    @staticmethod
    def is_added_at(places: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[places] = True
        return out


def _byte_level(pre: dict[str, Any] | None) -> bool:
    """Whether a pre-tokenizer ends in a ByteLevel that adds no space, after splits that drop nothing."""
    steps = [] if pre is None else pre.get("pretokenizers", []) if pre["type"] == "Sequence" else [pre]
    if not steps or steps[-1]["type"] != "ByteLevel" or steps[-1].get("add_prefix_space"):
        return False
    return all(p["type"] == "Digits" or (p["type"] == "Split" and p.get("behavior") != "Removed")
               for p in steps[:-1])


def _byte_at(text: str, i: int) -> int:
    """The UTF-8 byte offset of character `i`."""
    return i if text.isascii() else len(text[:i].encode())


def _trims_offsets(tok: Any) -> bool:
    """Whether the tokenizer's post-processor trims token offsets (``trim_offsets`` anywhere in it)."""
    pp = tok.post_processor
    todo = [json.loads(pp.__getstate__())] if pp is not None else []
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("trim_offsets") is True:
                return True
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return False
