"""Rosetta Code tasks as "solve this task in language X" conversations.

Two forms: CodeAlpaca's ``rosetta_alpaca.json`` (``instruction`` = task text, ``input`` = language name,
``output`` = code), and the RosettaCodeData folder layout (``Task/<task>/00DESCRIPTION`` plus
``Task/<task>/<Lang>/<file>``, one conversation per solution file). Both render the same way: the user
asks for the task in that language, the description turned from MediaWiki markup into plain text
(`sources.mediawiki`); the assistant answers with the code in a fenced block. Non-breaking spaces become
plain spaces in both.

A solution file or ``00DESCRIPTION`` that cannot be read (permissions, I/O) is a counted reject
(``unreadable_file``) naming the file; a folder that cannot be listed stops the run with a one-line error
naming it, since the files inside it cannot even be counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalmix.core.errors import UserError
from crystalmix.core.records import Conversation, InvalidRecordError, Message
from sft_builder.sources.base import Adapter, RawRecord, register
from sft_builder.sources.common import FileLabels, as_mapping, record_id, text_field, unique_id
from sft_builder.sources.mediawiki import normalize_spaces, to_text

DESCRIPTION = "00DESCRIPTION"
FENCE = {"c++": "cpp", "c#": "csharp", "f#": "fsharp", "objective-c": "objectivec", "common lisp": "lisp",
         "visual basic .net": "vbnet", "javascript": "javascript", "python": "python", "go": "go"}


@dataclass(frozen=True, slots=True)
class RosettaOptions:
    languages: tuple[str, ...] = ()  # keep only these languages (case-insensitive); empty = all
    convert_markup: bool = True  # MediaWiki -> text for the description (also for rosetta_alpaca.json)


def fence_tag(language: str) -> str:
    low = language.strip().lower()
    return FENCE.get(low, low.replace(" ", "-"))


def user_prompt(language: str, description: str, title: str | None = None) -> str:
    """The documented user turn: which task, which language, then the task text."""
    what = f'the Rosetta Code task "{title}"' if title else "the following Rosetta Code task"
    return f"Write a solution to {what} in {language}.\n\n{description}"


def assistant_answer(language: str, code: str) -> str:
    return f"```{fence_tag(language)}\n{normalize_spaces(code).strip(chr(10))}\n```"


@register
class RosettaAdapter(Adapter[RosettaOptions]):
    name = "rosetta"
    forms = ("rosetta_alpaca.json {instruction, input=language, output=code}; "
             "RosettaCodeData folders Task/<task>/{00DESCRIPTION, <Lang>/<file>}")
    Options = RosettaOptions

    def __init__(self, options: RosettaOptions, source: str | None = None) -> None:
        super().__init__(options, source)
        self.labels = FileLabels()
        self.languages = {lang.lower() for lang in options.languages}
        self._folder_ids: set[str] = set()  # ids of kept solution files (files are unique, ids may not be)

    def read(self, inputs: Sequence[str] | str, *, split: str = "train",
             data_files: str | Sequence[str] | None = None) -> Iterator[RawRecord]:
        """Folders in the RosettaCodeData layout are walked here; everything else goes to the readers."""
        from crystalmix.core.readers import plan_inputs

        specs = [inputs] if isinstance(inputs, str) else list(inputs)
        if not specs:
            raise UserError("no input given")
        # resolve everything first so a bad path fails before any output, then read in input order
        parts: list[Callable[[], Iterator[RawRecord]]] = []
        for spec in specs:
            root = _task_root(Path(spec))
            if root is None:
                parts += plan_inputs([spec], split=split, data_files=data_files)
            else:
                parts.append(lambda root=root: _walk_tasks(root))
        return _chain(parts)

    def convert_record(self, record: RawRecord) -> Iterable[Conversation]:
        data = record.data
        meta: dict[str, Any] = {"file": record.file, "line": record.line}
        if record.item:  # one of several records starting on this line (a one-line JSON array)
            meta["item"] = record.item
        if type(data) is SolutionFile:  # a solution file from the folder layout
            language, title = data["language"], data["task"].replace("-", " ").replace("_", " ")
            self._check_language(language)
            if data.get("error"):
                raise InvalidRecordError("unreadable_file", data["error"])
            if data.get("description") is None:
                raise InvalidRecordError("missing_description", f"no {DESCRIPTION} for task {data['task']}")
            if data.get("code") is None:
                raise InvalidRecordError("not_utf8", "the solution file is not UTF-8 text")
            description, code = data["description"], data["code"]
            meta.update(task=data["task"], language=language)
            cid = unique_id(f"{self.source}/{data['task']}/{language}/{Path(record.file).name}", self._folder_ids)
        else:
            data = as_mapping(data)
            description = text_field(data, "instruction")
            language = text_field(data, "input").strip()
            code = text_field(data, "output")
            title = None
            if not language:
                raise InvalidRecordError("missing_language", "empty 'input' (the language name)")
            self._check_language(language)
            meta["language"] = language
            cid = record_id(self.source, self.labels(record.file), record.ref)
        text = to_text(description) if self.options.convert_markup else normalize_spaces(description).strip()
        if not text.strip():
            raise InvalidRecordError("empty_content", "empty task description")
        if not code.strip():
            raise InvalidRecordError("empty_content", "empty solution")
        messages = (Message("user", user_prompt(language, text, title)),
                    Message("assistant", assistant_answer(language, code)))
        conv = Conversation(cid, self.source, messages, meta)
        if type(data) is SolutionFile:
            self._folder_ids.add(cid)
        return (conv,)


    def _check_language(self, language: str) -> None:
        if self.languages and language.lower() not in self.languages:
            raise InvalidRecordError("filtered_language", f"{language} is not in the 'languages' option")


def _chain(parts: list[Callable[[], Iterator[RawRecord]]]) -> Iterator[RawRecord]:
    for part in parts:
        yield from part()


class SolutionFile(dict):  # type: ignore[type-arg]
    """The raw record of one solution file of a RosettaCodeData folder (``task``, ``language``,
    ``description``, ``code``, and ``error`` when a file could not be read).

    Its own type, so a JSON record that merely has the same keys is never taken for one; a plain ``dict``
    to every writer.
    """


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise UserError(f"cannot list the folder: {exc.strerror or exc}", path=folder) from None


def _task_root(path: Path) -> Path | None:
    """The folder holding task folders if `path` is (inside) a RosettaCodeData layout, else None."""
    if not path.is_dir():
        return None
    if (path / "Task").is_dir():
        return path / "Task"
    if (path / DESCRIPTION).is_file():
        return path  # a single task folder
    if any((child / DESCRIPTION).is_file() for child in _listdir(path) if child.is_dir()):
        return path
    return None


def _read(path: Path) -> tuple[bytes | None, str]:
    """The bytes of a file, or None and why it could not be read."""
    try:
        return path.read_bytes(), ""
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"


def _walk_tasks(root: Path) -> Iterator[RawRecord]:
    tasks = [root] if (root / DESCRIPTION).is_file() else [p for p in _listdir(root) if p.is_dir()]
    for task in tasks:
        desc_file = task / DESCRIPTION
        description: str | None = None
        desc_error = ""
        if desc_file.is_file():
            raw, desc_error = _read(desc_file)
            # as text mode reads it: universal newlines, undecodable bytes replaced
            description = None if raw is None else \
                raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        for lang_dir in (p for p in _listdir(task) if p.is_dir() and not p.name.startswith(".")):
            for f in (p for p in _listdir(lang_dir) if p.is_file() and not p.name.startswith(".")):
                raw, error = _read(f)
                try:
                    code = None if raw is None else raw.decode("utf-8")
                except UnicodeDecodeError:
                    code = None
                data = SolutionFile(task=task.name, language=lang_dir.name, description=description, code=code)
                if error or desc_error:
                    data["error"] = error or desc_error
                yield RawRecord(data, str(f), 1)
