"""Rosetta Code: both forms give the same prompt shape; markup to text; NBSP normalised; rejects."""

from __future__ import annotations

from .conftest import turns


def test_rosetta_alpaca_json(run_adapter) -> None:
    convs, rejects, _ = run_adapter("rosetta", "rosetta/rosetta_alpaca.json")
    (user, code), (_, code2) = turns(convs[0]), turns(convs[1])
    assert user == ("user", "Write a solution to the following Rosetta Code task in Python.\n\n"
                            "Compute the factorial of a number; see factorial.")
    assert code == ("assistant", "```python\ndef fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n```")
    assert code2[1].startswith("```cpp\n") and convs[1].meta["language"] == "C++"
    assert [(r.line, r.reason) for r in rejects] == [(12, "missing_language"), (17, "empty_content")]


def test_rosetta_folder_layout(run_adapter) -> None:
    convs, rejects, adapter = run_adapter("rosetta", "rosetta")
    assert [c.id for c in convs] == ["rosetta/Hello-world-Text/Go/hello-world-text.go",
                                     "rosetta/Hello-world-Text/Python/hello-world-text-1.py",
                                     "rosetta/Hello-world-Text/Python/hello-world-text-2.py"]
    assert convs[0].messages[0].content == (
        'Write a solution to the Rosetta Code task "Hello world Text" in Go.\n\n'
        "Task:\nDisplay the string Hello world! on a text console.\n\n"
        "Related tasks:\n- Hello world/Graphical\n- Hello world programs")
    assert convs[2].messages[1].content == "```python\nimport sys\nsys.stdout.write('Hello world!\\n') \n```"
    assert "\u00a0" not in "".join(m.content for c in convs for m in c.messages)
    assert sorted((r.reason, r.file.rsplit("/", 1)[-1]) for r in rejects) == [
        ("missing_description", "no-description.py"), ("not_utf8", "binary-file.c")]
    assert adapter.stats.records == 5


def test_languages_option_rejects_the_others(run_adapter) -> None:
    convs, rejects, _ = run_adapter("rosetta", "rosetta/Task", languages="python")
    assert {c.meta["language"] for c in convs} == {"Python"}
    assert sorted(r.reason for r in rejects) == ["filtered_language", "filtered_language",
                                                 "missing_description"]


def test_single_task_folder_and_mixed_inputs_keep_order(run_adapter) -> None:
    convs, _, _ = run_adapter("rosetta", "rosetta/rosetta_alpaca.json", "rosetta/Task/Hello-world-Text")
    assert [c.meta["language"] for c in convs] == ["Python", "C++", "Go", "Python", "Python"]


def test_a_json_record_with_folder_keys_but_no_language_is_a_reject_not_a_crash(tmp_path) -> None:
    """Issue 13: ``{"task", "code"}`` without ``language`` raised KeyError; such a record is not a folder file."""
    import json

    from sft_builder.sources.base import make_adapter

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"task": "t", "code": "print(1)"}) + "\n"
                    + json.dumps({"task": "t", "code": "x", "language": "Go", "description": "d"}) + "\n")
    outs = list(make_adapter("rosetta", {}).stream([str(path)]))
    assert [(o.line, o.reason) for o in outs] == [(1, "missing_field"), (2, "missing_field")]


def test_unreadable_files_are_counted_rejects_naming_the_file(run_adapter, monkeypatch) -> None:
    """Issue 13: a PermissionError on a solution or on 00DESCRIPTION is a reject, not a crash."""
    from pathlib import Path

    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name in ("hello-world-text.go", "00DESCRIPTION"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    convs, rejects, adapter = run_adapter("rosetta", "rosetta")
    assert not convs and adapter.stats.records == 5
    unreadable = [r for r in rejects if r.reason == "unreadable_file"]
    assert len(unreadable) == 4  # the Hello-world-Text task has no readable description
    assert all("Permission denied" in r.detail and "/Task/" in r.file for r in unreadable)
    assert any("00DESCRIPTION" in r.detail for r in unreadable)
    assert any(r.detail.endswith("hello-world-text.go: Permission denied") for r in unreadable)


def test_a_folder_that_cannot_be_listed_is_a_user_error_naming_it(monkeypatch) -> None:
    from pathlib import Path

    import pytest

    from crystalmix.core.errors import UserError
    from sft_builder.sources.base import make_adapter

    from .conftest import FIX

    real = Path.iterdir

    def iterdir(self: Path):  # noqa: ANN202 - the patched method
        if self.name == "Python":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(UserError, match="Python: cannot list the folder: Permission denied"):
        list(make_adapter("rosetta", {}).stream([str(FIX / "rosetta")]))


def test_two_checkouts_give_distinct_ids(tmp_path) -> None:
    import shutil

    from sft_builder.sources.base import make_adapter

    from .conftest import FIX

    for name in ("a", "b"):
        shutil.copytree(FIX / "rosetta" / "Task", tmp_path / name / "Task")
    outs = list(make_adapter("rosetta", {}).stream([str(tmp_path / "a"), str(tmp_path / "b")]))
    ids = [o.id for o in outs if hasattr(o, "id")]
    assert len(ids) == len(set(ids)) == 6
    assert "rosetta/Hello-world-Text/Go/hello-world-text.go~2" in ids
