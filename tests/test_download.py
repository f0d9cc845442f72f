"""Downloads against a local HTTP server on 127.0.0.1: success, bad checksum, cut-off
transfer, 404, resume with Range, unreachable server, and resolving weights by URL."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detseg.cli.main import app
from detseg.download import download, hash_prefix_from_name, set_progress_factory
from detseg.errors import WeightsError
from detseg.weights import cache_dir, resolve_weights

PAYLOAD = bytes(range(256)) * 12_000  # ~3 MB: several 1 MiB chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /ok/* (Range aware), /norange/*, /cut/* (always cut), /flaky/* (cut once),
    /slow/* (answers late), /file/<name> (serves ``server.files[name]``); anything else 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        route = self.path.split("/")[1]
        body = server.files.get(self.path.split("/")[-1], PAYLOAD)
        if route == "slow":
            time.sleep(1.5)
        if route == "cut" or (route == "flaky" and server.hits.setdefault(self.path, 0) == 0):
            server.hits[self.path] = 1
            self._send(200, body, length=len(body), body_bytes=len(body) // 3)
            return
        if route in ("ok", "flaky", "slow", "file"):
            ranged = self.headers.get("Range")
            if ranged and route != "norange":
                start = int(ranged.split("=")[1].split("-")[0])
                if start >= len(body):
                    self._send(416, b"", length=0)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])
                return
            self._send(200, body, length=len(body))
            return
        if route == "norange":
            self._send(200, body, length=len(body))
            return
        self._send(404, b"not found", length=9)

    def _send(self, code: int, body: bytes, length: int, body_bytes: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        if body_bytes is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: body_bytes if body_bytes is not None else length])
        if body_bytes is not None:
            self.wfile.flush()
            self.close_connection = True


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[http.server.ThreadingHTTPServer]:
    monkeypatch.setenv("DETSEG_DOWNLOAD_TIMEOUT", "5")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.requests = []
    srv.hits = {}
    srv.files = {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_hash_prefix_from_name() -> None:
    assert hash_prefix_from_name("resnet50-11ad3fa6.pth") == "11ad3fa6"
    assert hash_prefix_from_name("fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth") == "dd69338a"
    assert hash_prefix_from_name("weights.pth") is None
    assert hash_prefix_from_name("weights-0123456.pth") is None  # fewer than 8 digits
    assert hash_prefix_from_name("https://host/models/vgg16-397923af.pth") == "397923af"


def test_download_success_verifies_and_reports_progress(server, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    out = download(f"{server.url}/ok/blob.bin", tmp_path / "blob.bin", sha256=SHA,
                   progress=lambda done, total: seen.append((done, total)))
    assert out.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_installed_progress_factory_sees_library_downloads(server, tmp_path: Path) -> None:
    seen: list[object] = []

    @contextmanager
    def factory(name: str) -> Iterator[Callable[[int, int | None], None]]:
        seen.append(name)
        yield lambda done, total: seen.append(done)

    previous = set_progress_factory(factory)
    try:
        download(f"{server.url}/ok/blob.bin", tmp_path / "blob.bin", sha256=SHA)
    finally:
        set_progress_factory(previous)
    assert seen[0] == "blob.bin" and seen[-1] == len(PAYLOAD)


def test_download_into_folder_checks_hash_prefix_in_name(server, tmp_path: Path) -> None:
    name = f"blob-{SHA[:8]}.bin"
    out = download(f"{server.url}/ok/{name}", tmp_path)
    assert out == tmp_path / name and out.read_bytes() == PAYLOAD
    with pytest.raises(WeightsError, match="checksum mismatch"):
        download(f"{server.url}/ok/blob-00000000.bin", tmp_path)
    assert not (tmp_path / "blob-00000000.bin").exists()


def test_bad_checksum_discards_the_file(server, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        download(f"{server.url}/ok/blob.bin", tmp_path / "blob.bin", sha256="ab" * 32)
    message = str(info.value)
    assert "checksum mismatch" in message and "blob.bin" in message and server.url in message
    assert _leftovers(tmp_path) == []


def test_cut_off_transfer_keeps_only_a_partial_file(server, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="cut off|run again to resume") as info:
        download(f"{server.url}/cut/blob.bin", tmp_path / "blob.bin", sha256=SHA)
    assert "detseg weights import FILE" in str(info.value)
    assert not (tmp_path / "blob.bin").exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == len(PAYLOAD) // 3


def test_resume_uses_a_range_request(server, tmp_path: Path) -> None:
    url = f"{server.url}/flaky/blob.bin"
    with pytest.raises(WeightsError):
        download(url, tmp_path / "blob.bin", sha256=SHA)
    out = download(url, tmp_path / "blob.bin", sha256=SHA)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/flaky/blob.bin", f"bytes={len(PAYLOAD) // 3}-")
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:1000])
    out = download(f"{server.url}/norange/blob.bin", tmp_path / "blob.bin", sha256=SHA)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[-1][1] == "bytes=1000-"


def test_stale_partial_file_is_discarded_not_renamed(server, tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the real file
    with pytest.raises(WeightsError, match="checksum mismatch"):
        download(f"{server.url}/ok/blob.bin", tmp_path / "blob.bin", sha256=SHA)
    assert _leftovers(tmp_path) == []
    assert download(f"{server.url}/ok/blob.bin", tmp_path / "blob.bin", sha256=SHA).is_file()


def test_http_404_names_file_url_and_remedies(server, tmp_path: Path) -> None:
    url = f"{server.url}/missing/model-1234abcd.pth"
    with pytest.raises(WeightsError) as info:
        download(url, tmp_path)
    message = str(info.value)
    assert "HTTP 404" in message and "model-1234abcd.pth" in message and url in message
    assert "detseg weights import FILE" in message and "--weights PATH" in message
    assert "\n" not in message
    assert _leftovers(tmp_path) == []


def test_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model-1234abcd.pth"
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        download(url, tmp_path)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith("could not download model-1234abcd.pth from " + url)
    assert "detseg weights import FILE" in message and "--weights PATH" in message
    assert "\n" not in message


def test_slow_server_times_out(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETSEG_DOWNLOAD_TIMEOUT", "0.3")
    with pytest.raises(WeightsError, match="no answer within 0.3 s"):
        download(f"{server.url}/slow/blob.bin", tmp_path / "blob.bin", sha256=SHA)
    assert not (tmp_path / "blob.bin").exists()


def test_parallel_downloads_of_one_file_fetch_it_once(server, tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(
            download(f"{server.url}/slow/blob.bin", tmp_path / "blob.bin", sha256=SHA)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(results) == 3 and len(server.requests) == 1
    assert _leftovers(tmp_path) == ["blob.bin"]


def _state_file(tmp_path: Path) -> tuple[bytes, str]:
    path = tmp_path / "src.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path)
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def test_resolve_url_by_hash_prefix_and_then_offline(server, tmp_path: Path) -> None:
    data, sha = _state_file(tmp_path)
    name = f"net-{sha[:10]}.pt"
    server.files[name] = data
    loaded = resolve_weights(f"{server.url}/file/{name}")
    assert torch.equal(loaded.state_dict["w"], torch.arange(6.0).reshape(2, 3))
    assert loaded.spec is None and (cache_dir() / name).is_file()
    count = len(server.requests)
    resolve_weights(f"{server.url}/file/{name}")  # served from the cache
    assert len(server.requests) == count


def test_resolve_url_needs_a_known_hash(server, tmp_path: Path, monkeypatch) -> None:
    data, sha = _state_file(tmp_path)
    server.files["net.pt"] = data
    with pytest.raises(WeightsError, match="unverified"):
        resolve_weights(f"{server.url}/file/net.pt")
    loaded = resolve_weights(f"{server.url}/file/net.pt#sha256={sha}")
    assert (cache_dir() / f"net-{sha[:8]}.pt").is_file()
    assert "w" in loaded.state_dict
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "manifest.json").write_text(json.dumps(
        {"net": {"url": f"{server.url}/file/net.pt", "file": "net-manifest.pt", "sha256": sha}}
    ))
    monkeypatch.setenv("DETSEG_WEIGHTS_DIR", str(shipped))
    resolve_weights("net")
    assert (cache_dir() / "net-manifest.pt").is_file()


def test_cli_download_draws_progress_and_reports_failures(server, tmp_path: Path,
                                                         monkeypatch) -> None:
    data, sha = _state_file(tmp_path)
    server.files["net.pt"] = data
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "manifest.json").write_text(json.dumps(
        {"net": {"url": f"{server.url}/file/net.pt", "sha256": sha},
         "gone": {"url": f"{server.url}/missing/gone.pt", "sha256": sha}}
    ))
    monkeypatch.setenv("DETSEG_WEIGHTS_DIR", str(shipped))
    result = CliRunner().invoke(app, ["weights", "download", "gone", "net"])
    assert result.exit_code == 1
    assert "HTTP 404" in result.output and "downloaded" in result.output
    assert (cache_dir() / "net.pt").read_bytes() == data
    again = CliRunner().invoke(app, ["weights", "download", "net"])
    assert again.exit_code == 0 and "cached" in again.output
