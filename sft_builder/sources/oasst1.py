"""OpenAssistant OASST1: message trees turned into root-to-leaf conversations.

Reads both forms: nested trees (one record per tree: a root message with ``replies``, or the tree export
``{message_tree_id, prompt: {...replies}}``) and flat message rows (parquet/jsonl with ``parent_id``,
grouped by ``message_tree_id``; rows of one tree must be contiguous, as in the released files).

Counting (the report's ``read``): with ``paths=best`` one candidate per tree, the path that follows the
best-ranked reply at every step; with ``paths=all`` one candidate per leaf of the tree after filtering,
plus one per filtered-out subtree (rejected with its ``filtered_*`` reason). A path that ends on an
unanswered prompter message is cut back to its last assistant reply (counted as a fix).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from crystalmix.core.records import Conversation, InvalidRecordError
from sft_builder.sources.base import Adapter, Output, RawRecord, Rejected, UnparsedRecord, register
from sft_builder.sources.common import repair_turns

ROLE = {"prompter": "user", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class OASST1Options:
    paths: Literal["best", "all"] = "best"
    lang: tuple[str, ...] = ()  # keep only messages in these languages; empty = any
    include_deleted: bool = False
    include_failed_review: bool = False  # review_result false (null, i.e. not reviewed, is kept)
    include_synthetic: bool = True


@dataclass(slots=True)
class _Node:
    msg: dict[str, Any]  # the message without its replies
    line: int
    children: list[_Node] = field(default_factory=list)

    @property
    def rank(self) -> float:
        r = self.msg.get("rank")
        return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) else float("inf")


@dataclass(slots=True)
class _Seen:
    """Where a tree was first read, a digest of its content, and the first conversation it gave."""

    digest: bytes
    file: str
    line: int
    conversation: str | None = None


@dataclass(slots=True)
class _Tree:
    root: _Node
    tree_id: str
    file: str
    line: int
    record: Any  # what a tree-level reject shows: the original record or the tree's rows


@register
class OASST1Adapter(Adapter[OASST1Options]):
    name = "oasst1"
    forms = ("nested trees (message with replies, or {message_tree_id, prompt}) and flat message rows "
             "(message_id, parent_id, message_tree_id) in parquet/jsonl")
    Options = OASST1Options

    def __init__(self, options: OASST1Options, source: str | None = None) -> None:
        super().__init__(options, source)
        self._ids: set[str] = set()  # conversation ids produced: unique even in corrupt or repeated trees
        self._trees: dict[str, _Seen] = {}  # tree id -> its first occurrence

    def run(self, records: Iterable[RawRecord]) -> Iterator[Output]:
        stats = self.stats
        group: list[RawRecord] = []
        group_key: str | None = None
        finished: set[str] = set()  # keys of the flat trees flushed so far
        for rec in records:
            data = rec.data
            if type(data) is UnparsedRecord or not isinstance(data, dict):
                stats.candidates += 1
                yield self.reject_unparsed(rec) if type(data) is UnparsedRecord else Rejected(
                    self.source, "adapter", "not_an_object", rec.file, rec.line, data)
                continue
            if "prompt" in data or "replies" in data:
                yield from self._flush(group, group_key, finished)
                group, group_key = [], None
                yield from self._tree_outputs(self._nested_tree(rec))
                continue
            key = data.get("message_tree_id") or (data.get("message_id") if data.get("parent_id") is None
                                                  else group_key)
            if key is None:
                stats.candidates += 1
                yield Rejected(self.source, "adapter", "orphan_message", rec.file, rec.line, data,
                               "flat row with a parent but no message_tree_id and no tree before it")
                continue
            key = str(key)
            if key != group_key:
                yield from self._flush(group, group_key, finished)
                group, group_key = [], key
            group.append(rec)
        yield from self._flush(group, group_key, finished)

    # -- flat rows -------------------------------------------------------------------------------------
    def _flush(self, rows: list[RawRecord], key: str | None, finished: set[str]) -> Iterator[Output]:
        if not rows or key is None:
            return
        if key in finished and all(r.data.get("parent_id") is not None for r in rows):
            # more rows of a tree read before: it is not contiguous. (Rows with a root of their own are
            # another copy of the tree: `_tree_outputs` tells a repeat from a later version.)
            for r in rows:
                self.stats.candidates += 1
                yield Rejected(self.source, "adapter", "tree_not_contiguous", r.file, r.line, r.data,
                               f"rows of tree {key} are not next to each other; sort by message_tree_id")
            return
        finished.add(key)
        nodes: dict[str, _Node] = {}
        order: list[tuple[RawRecord, _Node]] = []
        for r in rows:
            mid = str(r.data.get("message_id"))
            if mid in nodes:
                self.stats.candidates += 1
                yield Rejected(self.source, "adapter", "duplicate_message_id", r.file, r.line, r.data)
                continue
            nodes[mid] = _Node(r.data, r.line)
            order.append((r, nodes[mid]))
        root: _Node | None = None
        for r, node in order:
            parent = r.data.get("parent_id")
            if parent is None:
                root = root or node
            elif str(parent) in nodes and nodes[str(parent)] is not node:
                nodes[str(parent)].children.append(node)
        reached: set[int] = set()
        if root is not None:
            reached.add(id(root))
            _mark(root, reached)
        for r, node in order:
            if id(node) not in reached:  # a second root, a missing parent, or a cycle
                self.stats.candidates += 1
                yield Rejected(self.source, "adapter", "orphan_message", r.file, r.line, r.data,
                               "its parent is not in the same tree")
        if root is not None:
            tree_id = str(root.msg.get("message_tree_id") or root.msg.get("message_id"))
            yield from self._tree_outputs(_Tree(root, tree_id, rows[0].file, root.line,
                                                [r.data for r in rows]))

    # -- one tree --------------------------------------------------------------------------------------
    def _tree_outputs(self, tree: _Tree | Rejected) -> Iterator[Output]:
        if isinstance(tree, Rejected):
            self.stats.candidates += 1
            yield tree
            return
        digest = _digest(tree.root)
        first = self._trees.get(tree.tree_id)
        if first is not None and first.digest == digest:  # the same tree again (concatenated exports)
            self.stats.candidates += 1
            yield Rejected(self.source, "adapter", "duplicate_tree", tree.file, tree.line, tree.record,
                           f"tree {tree.tree_id} already read at {first.file}:{first.line}",
                           duplicate_of=first.conversation)
            return
        if first is None:
            first = self._trees[tree.tree_id] = _Seen(digest, tree.file, tree.line)
        # a tree id seen with other content (a later export of the tree): its paths not produced before
        # are new conversations; the others are rejected below as ``duplicate_id``
        for out in self._tree_paths(tree):
            if first.conversation is None and type(out) is Conversation:
                first.conversation = out.id
            yield out

    def _tree_paths(self, tree: _Tree) -> Iterator[Output]:
        reason = self._filtered(tree.root.msg)
        if reason:
            self.stats.candidates += 1
            yield Rejected(self.source, "adapter", reason, tree.file, tree.line, tree.record)
            return
        if self.options.paths == "best":
            path = [tree.root]
            while True:
                kids = [c for c in path[-1].children if not self._filtered(c.msg)]
                if not kids:
                    break
                path.append(min(kids, key=lambda c: c.rank))  # min keeps the first of equal ranks
            self.stats.candidates += 1
            yield self._path_output(tree, path, set())
            return
        seen_ends: set[int] = set()
        for path, reason in self._all_paths(tree.root, [tree.root]):
            self.stats.candidates += 1
            if reason:
                yield Rejected(self.source, "adapter", reason, tree.file, path[-1].line, _plain(path))
            else:
                yield self._path_output(tree, path, seen_ends)

    def _all_paths(self, node: _Node, path: list[_Node]) -> Iterator[tuple[list[_Node], str]]:
        """Every leaf path below `node`, and every filtered-out child subtree (with its reason).

        Depth-first in reply order, with an explicit stack: flat rows can chain thousands deep.
        """
        stack: list[tuple[list[_Node], str]] = [(path, "")]
        while stack:
            current, reason = stack.pop()
            if reason:
                yield current, reason
                continue
            items = [(current + [c], self._filtered(c.msg)) for c in current[-1].children]
            if all(r for _, r in items):  # no child passes the filters: this path ends here
                yield current, ""
            stack.extend(reversed(items))

    def _path_output(self, tree: _Tree, path: list[_Node], seen_ends: set[int]) -> Output:
        if not any(n.msg.get("role") == "assistant" for n in path):
            return Rejected(self.source, "adapter", "no_assistant_reply", tree.file, path[-1].line,
                            _plain(path), "the path has no assistant message")
        try:
            turns = []
            for n in path:
                raw_role = n.msg.get("role")
                role = ROLE.get(raw_role) if isinstance(raw_role, str) else None
                if role is None:
                    raise InvalidRecordError("unknown_role", f"role {raw_role!r}")
                turns.append((role, n.msg.get("text")))
            repaired = repair_turns(turns)  # the shared repair: an empty reply costs one round, a
            last = path[repaired.end]  # trailing prompter message is cut back to the answer before it
            if id(last) in seen_ends:
                return Rejected(self.source, "adapter", "duplicate_path", tree.file, path[-1].line,
                                _plain(path), "cut back to a conversation already produced from this tree")
            leaf_id = last.msg.get("message_id")
            if leaf_id is None or isinstance(leaf_id, (dict, list)) or not str(leaf_id):
                raise InvalidRecordError("missing_id", "the conversation's last message has no message_id")
            cid = f"{self.source}/{leaf_id}"
            if cid in self._ids:
                return Rejected(self.source, "adapter", "duplicate_id", tree.file, path[-1].line, _plain(path),
                                f"message id {leaf_id} ends a conversation already produced", duplicate_of=cid)
            meta = {"file": tree.file, "line": tree.line, "orig_id": str(leaf_id),
                    "group": f"{self.source}/{tree.tree_id}", "tree_id": tree.tree_id}
            if tree.root.msg.get("lang"):
                meta["lang"] = tree.root.msg["lang"]
            # the ranks among their siblings (None: unranked) of the answers along the tree path the
            # conversation follows: dedup keeps the best-ranked of two twin branches
            meta["ranks"] = [_rank(n.msg) for n in path[: repaired.end + 1] if n.msg.get("role") == "assistant"]
            conv = Conversation(cid, self.source, repaired.messages, meta)
        except InvalidRecordError as exc:
            return Rejected(self.source, "adapter", exc.reason, tree.file, path[-1].line, _plain(path),
                            exc.detail)
        seen_ends.add(id(last))
        self._ids.add(cid)
        self.stats.fixes.update(repaired.fixes)
        return conv

    def _nested_tree(self, rec: RawRecord) -> _Tree | Rejected:
        data = rec.data
        root_msg = data.get("prompt") if "prompt" in data else data
        if not isinstance(root_msg, dict):
            return Rejected(self.source, "adapter", "bad_tree", rec.file, rec.line, data,
                            "'prompt' is not an object")
        try:
            root = _build(root_msg, rec.line, 0)
        except InvalidRecordError as exc:
            return Rejected(self.source, "adapter", exc.reason, rec.file, rec.line, data, exc.detail)
        tree_id = data.get("message_tree_id") or root_msg.get("message_tree_id") or root_msg.get("message_id")
        return _Tree(root, str(tree_id), rec.file, rec.line, data)

    def _filtered(self, msg: dict[str, Any]) -> str:
        """The ``filtered_*`` reason this message fails, or "" if it passes the options."""
        o = self.options
        if msg.get("deleted") and not o.include_deleted:
            return "filtered_deleted"
        if msg.get("review_result") is False and not o.include_failed_review:
            return "filtered_review"
        if msg.get("synthetic") and not o.include_synthetic:
            return "filtered_synthetic"
        if o.lang and msg.get("lang") not in o.lang:
            return "filtered_lang"
        return ""


def _mark(node: _Node, reached: set[int]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        for c in n.children:
            if id(c) not in reached:  # guards against cycles in corrupt data
                reached.add(id(c))
                stack.append(c)


def _build(msg: dict[str, Any], line: int, depth: int) -> _Node:
    if depth > 500:
        raise InvalidRecordError("bad_tree", "tree deeper than 500 messages")
    replies = msg.get("replies") or []
    if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
        raise InvalidRecordError("bad_tree", "'replies' must be a list of message objects")
    node = _Node({k: v for k, v in msg.items() if k != "replies"}, line)
    node.children = [_build(r, line, depth + 1) for r in replies]
    return node


def _digest(root: _Node) -> bytes:
    """A digest of what a tree's conversations are made of (each message's id, parent, role, text and the
    fields the filters and ranking read), so one tree exported as flat rows, as a nested message or as a
    tree export digests the same, and a later version with more replies or edits does not."""
    h = hashlib.blake2b(digest_size=16)
    stack: list[tuple[_Node, Any]] = [(root, None)]
    parts = []
    while stack:
        node, parent = stack.pop()
        m = node.msg
        parts.append(json.dumps([m.get(k) for k in _DIGEST_KEYS] + [parent], ensure_ascii=False, default=repr))
        stack.extend((c, m.get("message_id")) for c in node.children)
    for part in sorted(parts):  # reply order does not make another tree
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.digest()


_DIGEST_KEYS = ("message_id", "role", "text", "rank", "lang", "deleted", "review_result", "synthetic")


def _plain(path: list[_Node]) -> list[dict[str, Any]]:
    return [n.msg for n in path]


def _rank(msg: dict[str, Any]) -> int | None:
    r = msg.get("rank")
    ok = isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
    return int(r) if ok else None
