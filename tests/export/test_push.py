"""`export --push`: no network, no token, a refused token or a repo holding other content is one line and
exit 2, checked before anything is written; a repo of our own gets the folder with stale files deleted."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from pytest_httpserver import HTTPServer

from .conftest import fake_build


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - an HTTPServer standing in for the Hub's whoami
    srv = HTTPServer(host="127.0.0.1", port=0)
    srv.start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url_for("").rstrip("/"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    yield srv
    srv.clear()
    srv.stop()


RESPONSE = SimpleNamespace(headers={}, request=None)  # what huggingface_hub's errors read of a response


class FakeApi:
    """HfApi in-process: a repo's files and card tags, and what was asked of it."""

    repos: dict[str, tuple[list[str], list[str]]] = {}
    calls: list[tuple[str, dict]] = []

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self.token = token

    def dataset_info(self, repo_id: str, timeout: float | None = None) -> SimpleNamespace:
        from huggingface_hub.errors import RepositoryNotFoundError

        if repo_id not in self.repos:
            raise RepositoryNotFoundError(f"404 {repo_id}", response=RESPONSE)
        files, tags = self.repos[repo_id]
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=f) for f in files],
                               card_data=SimpleNamespace(tags=tags) if tags else None)

    def create_repo(self, repo_id: str, **kw) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw) -> SimpleNamespace:
        self.calls.append(("upload_folder", kw))
        return SimpleNamespace(commit_url=f"https://hub.test/datasets/{kw['repo_id']}/commit/1")


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    import huggingface_hub

    FakeApi.repos, FakeApi.calls = {}, []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def one_line_exit_2(code: int, err: str) -> bool:
    return code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_offline_and_no_token_fail_before_anything_is_written(tmp_path: Path, run_cli, monkeypatch) -> None:
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    out = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/set")
    assert one_line_exit_2(code, err) and "HF_HUB_OFFLINE" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/set")
    assert one_line_exit_2(code, err) and "token" in err and "HF_TOKEN" in err
    assert not out.exists()


def test_no_network_is_one_line_at_once(tmp_path: Path, run_cli, monkeypatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: the real HTTP call is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    code, err = run_cli("export", str(build), "--out", str(tmp_path / "hub"), "--push", "me/set")
    assert one_line_exit_2(code, err) and "cannot reach" in err and "network" in err
    assert "hf_test_token" not in err


def test_a_refused_token_is_one_line(tmp_path: Path, run_cli, hub: HTTPServer) -> None:
    hub.expect_request("/api/whoami-v2").respond_with_json({"error": "Invalid credentials"}, status=401)
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    code, err = run_cli("export", str(build), "--out", str(tmp_path / "hub"), "--push", "me/set")
    assert one_line_exit_2(code, err) and "refused the token" in err
    assert hub.log[0][0].headers["Authorization"] == "Bearer hf_test_token"


def test_a_repo_with_other_content_is_refused_unless_forced(tmp_path: Path, run_cli, hub: HTTPServer,
                                                            fake_api: type[FakeApi]) -> None:
    hub.expect_request("/api/whoami-v2").respond_with_json({"name": "me"})
    fake_api.repos["me/set"] = ([".gitattributes", "README.md", "train.csv"], ["tabular"])
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    out = tmp_path / "hub"
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/set")
    assert one_line_exit_2(code, err) and "holds other content" in err and "--force" in err
    assert fake_api.calls == [] and not out.exists()  # nothing uploaded, nothing written
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/set", "--force")
    assert code == 0, err
    assert [c for c, _ in fake_api.calls] == ["upload_folder"]


def test_a_new_repo_is_created_private_and_our_own_repo_is_updated(tmp_path: Path, run_cli, hub: HTTPServer,
                                                                   fake_api: type[FakeApi]) -> None:
    hub.expect_request("/api/whoami-v2").respond_with_json({"name": "me"})
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    out = tmp_path / "hub"
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/new")
    assert code == 0, err
    (create, kw_create), (upload, kw) = fake_api.calls
    assert create == "create_repo" and kw_create["private"] is True and kw_create["repo_type"] == "dataset"
    assert upload == "upload_folder" and kw["folder_path"] == str(out) and kw["repo_id"] == "me/new"
    assert ".crystalmix-out" in kw["ignore_patterns"]
    assert "data/**/*.parquet" in kw["delete_patterns"]  # shards of an earlier export do not linger
    assert "https://hub.test/datasets/me/new/commit/1" in err
    assert 'load_dataset("me/new")' in (out / "README.md").read_text()  # the card names the repo it went to
    fake_api.calls.clear()
    fake_api.repos["me/old"] = ([".gitattributes", "README.md", "data/messages/train/x.parquet"], ["crystalmix"])
    code, err = run_cli("export", str(build), "--out", str(out), "--push", "me/old", "--public")
    assert code == 0, err
    assert [c for c, _ in fake_api.calls] == ["upload_folder"]


def test_an_http_error_while_pushing_is_one_line(tmp_path: Path, run_cli, hub: HTTPServer,
                                                 fake_api: type[FakeApi], monkeypatch) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    hub.expect_request("/api/whoami-v2").respond_with_json({"name": "me"})

    def refuse(self, **kw):
        raise HfHubHTTPError("403 Forbidden: you cannot write to\nthis namespace", response=RESPONSE)

    monkeypatch.setattr(FakeApi, "upload_folder", refuse)
    build = fake_build(tmp_path / "build", n_train=5, n_test=1)
    code, err = run_cli("export", str(build), "--out", str(tmp_path / "hub"), "--push", "them/set")
    assert code == 2 and "Traceback" not in err  # the export was written, then the upload failed: its line last
    assert err.strip().splitlines()[-1] == "error: pushing to them/set failed: 403 Forbidden: you cannot write to " \
        "this namespace"
