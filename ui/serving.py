"""What the demo page lets in and out, and on which address it listens.

* :func:`launch_options`: loopback only unless ``--allow-remote``; logins from the
  ``TOOLIQA_UI_AUTH`` environment variable.
* :data:`MAX_UPLOAD_BYTES`: the image byte cap, which Gradio applies to uploads while
  they arrive; :func:`upload_bytes` reads an upload through the same cap, and makes its
  name safe to record and show (see :func:`shown_text`).
* :func:`write_download`: the assessment JSON offered for download, in one temporary
  folder per process that is pruned as it goes and removed at exit.
* :func:`check_connection`: http(s) URLs only, a short timeout, and a model list
  capped and escaped, since the names are the server's untrusted text.

Status lines go through :func:`status_markdown`, which escapes HTML and Markdown.
"""

from __future__ import annotations

import atexit
import base64
import html
import ipaddress
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tooliqa.tools import ImageError, ImageLimits, clean_text, one_line, read_image_bytes

__all__ = [
    "AUTH_ENV",
    "CACHE_CLEANUP",
    "CHECK_TIMEOUT_S",
    "MAX_UPLOAD_BYTES",
    "LaunchError",
    "check_connection",
    "file_stem",
    "is_loopback",
    "launch_options",
    "parse_auth",
    "recorded_name",
    "shown_text",
    "status_markdown",
    "upload_bytes",
    "write_download",
]

#: ``user:password`` pairs, comma-separated, that the page asks for (no colon in a user
#: name, no comma in a password).
AUTH_ENV = "TOOLIQA_UI_AUTH"
#: Gradio's ``delete_cache``: every 10 minutes, the uploads and served copies of files
#: older than an hour are deleted; all of them when the server stops.
CACHE_CLEANUP = (600, 3600)
#: Gradio's ``max_file_size``: uploads over the image byte cap are refused as they arrive.
MAX_UPLOAD_BYTES = ImageLimits().max_bytes
#: How long "Check connection" waits for a server, in seconds, reading included.
CHECK_TIMEOUT_S = 5.0
#: At most this many model names are listed, each cut to MAX_SHOWN_CHARS.
MAX_MODELS_SHOWN = 20
MAX_SHOWN_CHARS = 80
#: A name recorded in an assessment is cut to this many characters.
MAX_RECORDED_CHARS = 255
#: Download files older than this many seconds are deleted (Gradio has served its own
#: copy by then) and at most MAX_DOWNLOADS are kept.
DOWNLOAD_MAX_AGE_S = 600
MAX_DOWNLOADS = 256

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
#: Characters Markdown (with GFM autolinks and Gradio's ``$$`` LaTeX) may act on, as
#: character references: shown as themselves, never as formatting, links or maths.
_MARKDOWN_INERT = str.maketrans({c: f"&#{ord(c)};" for c in "\\`*_[]~|:@.$"})
_UNSAFE_FILE_CHARS = re.compile(r"[^\w.-]+")


class LaunchError(ValueError):
    """The page cannot be served as asked (a remote address without the flag, bad logins)."""


# ---------------------------------------------------------------------------
# Text shown on the page
# ---------------------------------------------------------------------------


def status_markdown(text: str, kind: str = "info") -> str:
    """Status markdown: plain text shown as it is (HTML and Markdown characters escaped,
    so no tag, emphasis or link comes from it), coloured for errors and successes.

    >>> status_markdown("<b>x</b> **y** www.example.org", "ok")
    '<span class="tooliqa-ok">✓ &lt;b&gt;x&lt;/b&gt; &#42;&#42;y&#42;&#42; www&#46;example&#46;org</span>'
    """
    safe = html.escape(text).translate(_MARKDOWN_INERT)
    if kind == "error":
        return f'<span class="tooliqa-error">⚠ {safe}</span>'
    if kind == "ok":
        return f'<span class="tooliqa-ok">✓ {safe}</span>'
    return safe


def shown_text(text: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """Untrusted text (a file name, a model name) as one line of at most ``limit``
    characters, control characters replaced; :func:`status_markdown` escapes the rest.

    >>> shown_text("two\\nlines\\x00" + "x" * 100, limit=12)
    'two lines\\ufffdx…'
    """
    return one_line(text, limit)


# ---------------------------------------------------------------------------
# Launch: address and logins
# ---------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_auth(value: str) -> list[tuple[str, str]]:
    """``"user:password,other:secret"`` as Gradio's list of ``(user, password)`` pairs.

    >>> parse_auth("ann:s3cret, bob:pa:ss")
    [('ann', 's3cret'), ('bob', 'pa:ss')]
    """
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise LaunchError(
                f"{AUTH_ENV} must be user:password pairs separated by commas "
                "(a user name and a password in each)"
            )
        pairs.append((user, password))
    return pairs


def launch_options(
    host: str,
    port: int,
    *,
    allow_remote: bool = False,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``; :class:`LaunchError` for an address other
    than loopback without ``allow_remote``. Logins come from :data:`AUTH_ENV` (on any
    address); a remote address without them is served with a warning on stderr."""
    environ = os.environ if environ is None else environ
    if not is_loopback(host) and not allow_remote:
        raise LaunchError(
            f"--host {host} makes the page reachable from other machines; pass "
            f"--allow-remote to do so, and set {AUTH_ENV}=user:password to require a login"
        )
    options: dict[str, Any] = {
        "server_name": host,
        "server_port": port,
        "share": False,
    }
    raw = environ.get(AUTH_ENV, "").strip()
    if raw:
        options["auth"] = parse_auth(raw)
    elif not is_loopback(host):
        print(
            f"warning: serving on {host} without a login: anyone who can reach port {port} "
            f"can use the page and the servers it names; set {AUTH_ENV}=user:password",
            file=sys.stderr,
        )
    return options


# ---------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------


def recorded_name(name: Any) -> str | None:
    """An upload's name as recorded in the assessment: one line, control characters
    replaced, at most :data:`MAX_RECORDED_CHARS` characters; None when empty."""
    if name is None:
        return None
    line = one_line(name, MAX_RECORDED_CHARS)
    return line or None


def upload_bytes(payload: Any, limits: ImageLimits) -> tuple[bytes, str | None]:
    """Bytes and a recorded name (see :func:`recorded_name`) of an uploaded image (a file
    payload, a path or a data URL), refused over ``limits.max_bytes`` before it is read."""
    if payload is None:
        raise ImageError("no image: upload one, paste one or pick an example")
    url: Any = None
    if isinstance(payload, str | os.PathLike):
        path: Any = os.fspath(payload)
        name: Any = Path(path).name
    elif isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url")
        name = payload.get("orig_name") or (Path(str(path)).name if path else None)
    else:
        raise ImageError(f"unexpected upload of type {type(payload).__name__}")
    name = recorded_name(name)
    if path:
        try:
            return read_image_bytes(str(path), limits), name
        except ImageError as exc:  # say which upload, not where the server keeps it
            raise ImageError(str(exc).replace(str(path), "the upload")) from None
    if isinstance(url, str) and url.startswith("data:") and "," in url:
        encoded = url.split(",", 1)[1]
        if len(encoded) // 4 * 3 > limits.max_bytes:
            raise ImageError(f"the pasted image is over the limit of {limits.max_bytes} bytes")
        try:
            return base64.b64decode(encoded), name or "pasted image"
        except ValueError:
            raise ImageError("the pasted data is not valid base64") from None
    raise ImageError("the upload has no file")


# ---------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------

_downloads: Path | None = None
_downloads_lock = threading.Lock()


def _downloads_folder() -> Path:
    """This process's folder for download files, made on first use, removed at exit."""
    global _downloads
    with _downloads_lock:
        if _downloads is None or not _downloads.is_dir():
            _downloads = Path(tempfile.mkdtemp(prefix="tooliqa-ui-"))
            atexit.register(shutil.rmtree, _downloads, ignore_errors=True)
        return _downloads


def _prune(folder: Path, now: float) -> None:
    """Delete the entries older than :data:`DOWNLOAD_MAX_AGE_S`, then the oldest beyond
    :data:`MAX_DOWNLOADS`."""
    entries = []
    for entry in folder.iterdir():
        try:
            entries.append((entry.stat().st_mtime, entry))
        except OSError:
            continue
    entries.sort(reverse=True)
    for rank, (mtime, entry) in enumerate(entries):
        if now - mtime > DOWNLOAD_MAX_AGE_S or rank >= MAX_DOWNLOADS:
            shutil.rmtree(entry, ignore_errors=True)


def file_stem(name: Any) -> str:
    """A file-name stem from an upload's name: word characters, dots and dashes, at most
    80 bytes; ``image`` when nothing is left.

    >>> file_stem("my photo (1).jpg"), file_stem("../\\x00<b>.png"), file_stem("\\n")
    ('my_photo_1', 'b', 'image')
    """
    base = re.split(r"[\\/]", str(name or ""))[-1]
    stem = _UNSAFE_FILE_CHARS.sub("_", Path(base).stem).strip("._-")
    stem = stem.encode("utf-8")[:80].decode("utf-8", "ignore").rstrip("._-")
    return stem or "image"


def write_download(text: str, name: Any) -> str:
    """Write ``text`` as ``<stem>_assessment.json`` in a new subfolder of this process's
    download folder (pruned first); its path, for a ``DownloadButton``."""
    folder = _downloads_folder()
    _prune(folder, time.time())
    path = Path(tempfile.mkdtemp(dir=folder)) / f"{file_stem(name)}_assessment.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------
# "Check connection"
# ---------------------------------------------------------------------------


def check_connection(url: str, model: str) -> tuple[str, Any]:
    """Whether a server answers and the models it lists (names only, capped and escaped),
    or why it cannot be reached; fills in the model box when it is empty."""
    import gradio as gr

    from tooliqa.backends.openai_compat import BackendError, check_server

    url = (url or "").strip()
    if not url:
        return status_markdown("Enter the server URL first.", "error"), gr.skip()
    try:
        models = check_server(url, timeout=CHECK_TIMEOUT_S)
    except BackendError as exc:
        reason = shown_text(exc, 300)
        return status_markdown(f"Connection failed: {reason}", "error"), gr.skip()
    listed = ", ".join(shown_text(m) for m in models[:MAX_MODELS_SHOWN])
    if len(models) > MAX_MODELS_SHOWN:
        listed += f" and {len(models) - MAX_MODELS_SHOWN} more"
    text = status_markdown(f"Connected to {shown_text(url)}. Models: {listed}", "ok")
    wanted = (model or "").strip()
    if wanted and wanted not in models:
        missing = f"The server does not list the model '{shown_text(wanted)}'."
        return text + "<br>" + status_markdown(missing, "error"), gr.skip()
    first = models[0]
    fill = not wanted and first == clean_text(first) and len(first) <= MAX_RECORDED_CHARS
    return text, (first if fill else gr.skip())
