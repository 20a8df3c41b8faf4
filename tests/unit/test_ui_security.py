"""What the demo page lets in and out: "Check connection" (http(s) only, no reply text
echoed, a short timeout), the listening address and logins, download files that do not
pile up, odd upload names and the upload byte cap (no browser; local sockets only)."""

from __future__ import annotations

import html
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="gradio is not installed (the 'ui' extra)")

import gradio as gr

from tooliqa.backends.openai_compat import BackendError, ServerConfig, check_server
from tooliqa.tools import ImageError, ImageLimits
from tooliqa.ui import app, serving

from _support import REPO

EXAMPLE = REPO / "examples" / "coffee_underexposed.jpg"

Reply = tuple[int, dict[str, str], bytes]


@pytest.fixture
def http_server() -> Iterator[Callable[[Callable[[str], Reply]], str]]:
    """Start a local HTTP server answering each GET with ``reply(path)``; its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Callable[[str], Reply]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = reply(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def models_reply(*names: str) -> Reply:
    body = json.dumps({"object": "list", "data": [{"id": n} for n in names]}).encode()
    return 200, {"Content-Type": "application/json"}, body


def status_text(outputs: tuple[Any, ...]) -> str:
    return str(outputs[0])


class TestCheckConnection:
    def test_file_urls_are_refused_and_the_file_is_not_read(self, tmp_path):
        (tmp_path / "v1").mkdir()
        (tmp_path / "v1" / "models").write_text(json.dumps({"data": [{"id": "SECRET-MODEL"}]}))
        url = f"file://{tmp_path}/v1"
        with pytest.raises(BackendError, match="http:// or https://") as exc:
            check_server(url)
        assert exc.value.kind == "client"
        text, fill = serving.check_connection(url, "")
        assert "Connection failed" in text and "SECRET" not in text
        assert fill is not None and fill != "SECRET-MODEL"

    @pytest.mark.parametrize("url", ["ftp://127.0.0.1/v1", "data:,{}", "file:///etc/passwd"])
    def test_other_schemes_are_refused(self, url):
        with pytest.raises(BackendError, match="must start with http:// or https://"):
            check_server(url)
        with pytest.raises(BackendError):
            _ = ServerConfig(url).api_root

    def test_a_url_without_a_scheme_suggests_http(self):
        with pytest.raises(BackendError, match=r"did you mean 'http://localhost:8000'"):
            check_server("localhost:8000")
        text, _ = serving.check_connection("127.0.0.1:8000", "")
        assert "Connection failed" in text
        assert "did you mean 'http://127.0.0.1:8000'" in html.unescape(text)
        assert "http://" not in text  # not turned into a link

    def test_a_model_list_is_names_only_capped_and_escaped(self, http_server):
        hostile = "<img src=x onerror=alert(1)>**bold**\x1b[31m"
        names = [hostile, *(f"model-{i}-" + "x" * 1000 for i in range(300))]
        base = http_server(lambda path: models_reply(*names))
        text, fill = serving.check_connection(base + "/v1", "")
        assert text.startswith('<span class="tooliqa-ok">')
        assert "<img" not in text and "\x1b" not in text and "**bold**" not in text
        assert "and 281 more" in text
        assert len(text) < 30 * (serving.MAX_SHOWN_CHARS + 40)
        assert fill is not None and not isinstance(
            fill, str
        )  # a hostile first name is not filled in

    def test_a_plain_first_model_fills_the_model_box(self, http_server):
        base = http_server(lambda path: models_reply("tiny-qwen3-vl", "other"))
        text, fill = serving.check_connection(base, "")
        assert "Connected to" in text and "tiny-qwen3-vl" in html.unescape(text)
        assert fill == "tiny-qwen3-vl"

    def test_error_replies_are_not_echoed(self, http_server):
        secret = b"SECRET-BODY <script>alert(1)</script>"
        replies = {
            "/a/v1/models": (500, {}, secret),
            "/b/v1/models": (200, {"Content-Type": "application/json"}, secret),
            "/c/v1/models": (200, {}, json.dumps(["SECRET-BODY"]).encode()),
            "/d/v1/models": (200, {}, b'{"data": [], "error": "SECRET-BODY"}'),
        }
        base = http_server(lambda path: replies[path])
        for prefix in ("/a", "/b", "/c", "/d"):
            with pytest.raises(BackendError) as exc:
                check_server(base + prefix)
            assert "SECRET" not in str(exc.value)
            text, _ = serving.check_connection(base + prefix, "")
            assert "Connection failed" in text and "SECRET" not in text and "<script" not in text

    def test_an_oversized_reply_is_refused(self, http_server):
        big = json.dumps({"data": [{"id": "m" * 2_000_000}]}).encode()
        base = http_server(lambda path: (200, {}, big))
        with pytest.raises(BackendError, match="bytes for /models"):
            check_server(base)

    def test_redirects_are_not_followed(self, http_server):
        def reply(path: str) -> Reply:
            if path.startswith("/moved"):
                return models_reply("SECRET-MODEL")
            return 302, {"Location": "/moved/v1/models"}, b""

        base = http_server(reply)
        with pytest.raises(BackendError, match="HTTP 302") as exc:
            check_server(base)
        assert exc.value.status == 302

    def test_a_server_that_never_answers_times_out_quickly(self, monkeypatch):
        assert serving.CHECK_TIMEOUT_S <= 5
        monkeypatch.setattr(serving, "CHECK_TIMEOUT_S", 0.5)
        with socket.socket() as listener:  # accepts connections (backlog), never replies
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            port = listener.getsockname()[1]
            t0 = time.monotonic()
            text, _ = serving.check_connection(f"http://127.0.0.1:{port}/v1", "")
            assert time.monotonic() - t0 < 3
        assert "Connection failed" in text and "no answer" in text

    def test_a_server_that_trickles_its_reply_is_cut_at_the_timeout(self):
        stop = threading.Event()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def trickle() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                deadline = time.monotonic() + 15
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        return
                    time.sleep(0.05)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="no answer") as exc:
                check_server(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
            assert time.monotonic() - t0 < 4
            assert exc.value.kind == "timeout"
        finally:
            stop.set()
            thread.join(5)
            listener.close()


class TestLaunch:
    @pytest.fixture
    def launched(self, monkeypatch) -> list[dict[str, Any]]:
        """``Blocks.launch`` replaced by a recorder of its keyword arguments."""
        calls: list[dict[str, Any]] = []
        monkeypatch.setattr(gr.Blocks, "launch", lambda self, *a, **kw: calls.append(kw))
        monkeypatch.delenv(serving.AUTH_ENV, raising=False)
        return calls

    @pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "[::1]"])
    def test_loopback_needs_no_flag(self, host):
        assert serving.launch_options(host, 7860, environ={})["server_name"] == host

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.org", ""])
    def test_other_addresses_are_refused_without_the_flag(self, host):
        with pytest.raises(serving.LaunchError, match="--allow-remote"):
            serving.launch_options(host, 7860, environ={})

    def test_main_refuses_a_remote_host_with_status_2(self, launched, capsys):
        assert app.main(["--host", "0.0.0.0"]) == 2
        assert "--allow-remote" in capsys.readouterr().err
        assert launched == []

    def test_the_cli_refuses_a_remote_host_with_status_2(self, launched, capsys):
        from tooliqa.cli import main

        assert main(["ui", "--host", "0.0.0.0", "--port", "7999"]) == 2
        assert "--allow-remote" in capsys.readouterr().err
        assert launched == []

    def test_logins_from_the_environment_reach_launch(self, launched, monkeypatch, capsys):
        from tooliqa.cli import main

        monkeypatch.setenv(serving.AUTH_ENV, "ann:s3cret, bob:pa:ss")
        assert main(["ui", "--host", "0.0.0.0", "--allow-remote", "--port", "7999"]) == 0
        (kwargs,) = launched
        assert kwargs["auth"] == [("ann", "s3cret"), ("bob", "pa:ss")]
        assert kwargs["server_name"] == "0.0.0.0" and kwargs["server_port"] == 7999
        assert kwargs["share"] is False
        assert kwargs["max_file_size"] == ImageLimits().max_bytes
        assert "warning" not in capsys.readouterr().err

    def test_remote_without_logins_warns(self, launched, capsys):
        assert app.main(["--host", "0.0.0.0", "--allow-remote"]) == 0
        assert "auth" not in launched[0]
        err = capsys.readouterr().err
        assert "warning" in err and serving.AUTH_ENV in err

    @pytest.mark.parametrize("value", ["ann", "ann:", ":pw", "ann:pw,", "ann:pw,bob"])
    def test_malformed_logins_are_refused(self, launched, monkeypatch, capsys, value):
        monkeypatch.setenv(serving.AUTH_ENV, value)
        assert app.main([]) == 2
        assert serving.AUTH_ENV in capsys.readouterr().err
        assert launched == []

    def test_the_page_deletes_gradios_cached_files(self):
        assert app.build_app().delete_cache == serving.CACHE_CLEANUP


def tooliqa_ui_folders() -> set[str]:
    return {p.name for p in Path(serving.tempfile.gettempdir()).glob("tooliqa-ui-*")}


class TestDownloads:
    def test_one_folder_per_process_removed_at_exit(self, tmp_path):
        before = tooliqa_ui_folders()
        code = (
            "from tooliqa.ui.serving import write_download\n"
            "for i in range(3):\n"
            "    print(write_download('{}', 'a.jpg'))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
        ).stdout.split()
        folders = {Path(p).parents[1] for p in out}
        assert len(out) == 3 and len(folders) == 1
        assert folders.pop().name.startswith("tooliqa-ui-")
        assert all(Path(p).name == "a_assessment.json" for p in out)
        assert not any(Path(p).exists() for p in out)
        assert not Path(out[0]).parents[1].exists()
        assert tooliqa_ui_folders() <= before

    def test_old_downloads_are_pruned(self):
        first = Path(serving.write_download("{}", "old.png"))
        old = time.time() - serving.DOWNLOAD_MAX_AGE_S - 60
        os.utime(first.parent, (old, old))
        second = Path(serving.write_download('{"a": 1}', "new.png"))
        assert second.read_text() == '{"a": 1}'
        assert second.parents[1] == first.parents[1]
        assert not first.exists()

    def test_at_most_max_downloads_are_kept(self, monkeypatch):
        monkeypatch.setattr(serving, "MAX_DOWNLOADS", 3)
        paths = [Path(serving.write_download("{}", f"{i}.png")) for i in range(6)]
        assert len(list(paths[-1].parents[1].iterdir())) <= 4
        assert paths[-1].exists()

    @pytest.mark.parametrize(
        ("name", "stem"),
        [
            ("photo.jpg", "photo"),
            ("x" * 300 + ".jpg", "x" * 80),
            ("a\x00b.jpg", "a_b"),
            ("line\nbreak.png", "line_break"),
            ("<img src=x>.png", "img_src_x"),
            ("../../etc/passwd", "passwd"),
            ("", "image"),
            (None, "image"),
        ],
    )
    def test_file_names_are_safe(self, name, stem):
        assert serving.file_stem(name) == stem


async def run_to_end(image: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    outputs = []
    async for out in app.run_single(
        image, app.CLASSIC, "", "", 0, [], kwargs.get("question", ""), []
    ):
        outputs.append(out)
    return outputs


class TestUploads:
    @pytest.mark.parametrize(
        "name",
        [
            "x" * 300 + ".jpg",
            "evil\x00name.jpg",
            "two\nlines.jpg",
            "<img src=x onerror=alert(1)>**b**.jpg",
            "../../etc/passwd",
        ],
    )
    async def test_odd_upload_names_keep_the_result(self, tmp_path, name):
        upload = tmp_path / "upload.jpg"
        shutil.copy(EXAMPLE, upload)
        outputs = await run_to_end({"path": str(upload), "orig_name": name})
        final = outputs[-1]
        assert "Score" in status_text(final), status_text(final)
        download = final[-1]["value"]
        assert download and Path(download).is_file()
        assert len(Path(download).name.encode()) < 120
        record = json.loads(Path(download).read_text())
        assert "\x00" not in record["image"] and "\n" not in record["image"]
        assert len(record["image"]) <= serving.MAX_RECORDED_CHARS
        for out in outputs:
            shown = status_text(out)
            assert "<img" not in shown and "\x00" not in shown and "**b**" not in shown
            assert len(shown) < 400

    def test_the_byte_cap_applies_before_the_file_is_read(self, tmp_path):
        big = tmp_path / "big.jpg"
        with open(big, "wb") as fh:  # sparse: no disk used
            fh.truncate(1536 * 1024 * 1024)
        tracemalloc.start()
        try:
            with pytest.raises(ImageError, match="over the limit") as exc:
                serving.upload_bytes({"path": str(big), "orig_name": "big.jpg"}, ImageLimits())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 50 * 1024 * 1024
        assert str(tmp_path) not in str(exc.value)  # where the server keeps it is not shown

    async def test_an_oversized_upload_gives_a_readable_error(self, tmp_path, monkeypatch):
        big = tmp_path / "big.jpg"
        with open(big, "wb") as fh:
            fh.truncate(200 * 1024 * 1024)
        outputs = await run_to_end({"path": str(big), "orig_name": "big.jpg"})
        text = status_text(outputs[-1])
        assert "not a usable image" in text and "over the limit" in text
        assert str(tmp_path) not in text

    def test_a_pasted_data_url_is_capped_before_decoding(self):
        url = "data:image/png;base64," + "A" * 4000
        with pytest.raises(ImageError, match="over the limit"):
            serving.upload_bytes({"url": url}, ImageLimits(max_bytes=1000))
        data, name = serving.upload_bytes({"url": "data:,QUJD"}, ImageLimits(max_bytes=1000))
        assert data == b"ABC" and name == "pasted image"
