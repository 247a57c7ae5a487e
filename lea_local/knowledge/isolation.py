"""Extraction in a child process with limits: what a hostile document costs stays in the child.

A few kilobytes can make the parsing libraries spend gigabytes (a Markdown table of empty cells:
markdown-it keeps several objects per cell) or minutes of CPU (a PDF whose pages share one endless
content stream of text operators), and nothing short of running them can tell. So `extract`
runs in a fresh interpreter (not a fork of the server, whose models and threads it must not
share) that sets its own RLIMIT_AS (LEA_KNOWLEDGE_MAX_EXTRACT_MEMORY_BYTES) and RLIMIT_CPU
(LEA_KNOWLEDGE_MAX_EXTRACT_SECONDS) before reading the file; the parent also kills it past a
wall-clock deadline, or as soon as `cancelled` is set (the request ended). A child that dies of a
limit is a DocumentTooLarge naming the setting; nothing is written before extraction succeeds.

The child loads extract.py by its path, not through the package (whose __init__ imports the
database and the encoders): it starts in about 0.1 s. It reads the file from, and writes the
result (JSON, never pickle) to, a private temporary directory removed afterwards.

This module's top level imports only the standard library: the child loads it by path too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lea_local.knowledge.extract import ExtractedDocument, ExtractionLimits

_POLL_SECONDS = 0.05
# The wall-clock deadline: the CPU limit, times this, plus the grace below (a loaded machine
# gives the child less than a core; a child blocked on nothing but the clock is stopped too).
_WALL_FACTOR = 3
_WALL_GRACE_SECONDS = 10
_MEMORY_SETTING = "LEA_KNOWLEDGE_MAX_EXTRACT_MEMORY_BYTES"
_CPU_SETTING = "LEA_KNOWLEDGE_MAX_EXTRACT_SECONDS"
_BOOTSTRAP = """
import importlib.util, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
extract = load("lea_knowledge_extract", sys.argv[1])
load("lea_knowledge_isolation", sys.argv[2]).child_main(extract, sys.argv[3:])
"""


class ExtractionCancelled(Exception):
    """The caller gave up (its request ended) while the child was extracting: it was killed."""


@dataclass(frozen=True)
class ChildUsage:
    """What the last child cost (its own rusage): for the logs and the tests."""

    cpu_seconds: float
    max_rss_bytes: int
    """Its peak resident memory, as sampled while it ran (RLIMIT_AS is the bound, not this)."""
    wall_seconds: float


_last_usage = threading.local()


def last_usage() -> ChildUsage | None:
    """The cost of the last child this thread ran (None before any)."""
    return getattr(_last_usage, "value", None)


def extract_isolated(
    file_name: str,
    data: bytes,
    limits: ExtractionLimits,
    cancelled: threading.Event | None = None,
) -> ExtractedDocument:
    """`extract(file_name, data, limits)` in a child process with limits (see the module).
    DocumentRejected (DocumentTooLarge for a limit) as `extract` would; ExtractionCancelled
    when `cancelled` was set before it finished."""
    from lea_local.knowledge import extract as extract_module
    from lea_local.knowledge.extract import DocumentRejected, DocumentTooLarge, ExtractedDocument, Section

    with tempfile.TemporaryDirectory(prefix="lea-extract-") as directory:
        source, result = Path(directory) / "document", Path(directory) / "result.json"
        source.write_bytes(data)
        header = json.dumps(
            {
                "file_name": file_name,
                "limits": {
                    "max_pages": limits.max_pages,
                    "max_chars": limits.max_chars,
                    "max_passages": limits.max_passages,
                    "max_docx_xml_bytes": limits.max_docx_xml_bytes,
                    "max_memory_bytes": limits.max_memory_bytes,
                    "max_cpu_seconds": limits.max_cpu_seconds,
                },
            }
        )
        command = [
            sys.executable, "-I", "-c", _BOOTSTRAP,
            extract_module.__file__, __file__, header, str(source), str(result),
        ]  # fmt: skip
        started = time.monotonic()
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True
        )
        deadline = started + limits.max_cpu_seconds * _WALL_FACTOR + _WALL_GRACE_SECONDS
        killed_for: str | None = None
        peak = 0
        while True:
            peak = max(peak, _resident_peak(child.pid))
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if cancelled is not None and cancelled.is_set():
                killed_for = "cancelled"
            elif time.monotonic() > deadline:
                killed_for = "wall"
            if killed_for:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(_POLL_SECONDS)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        cpu = usage.ru_utime + usage.ru_stime
        _last_usage.value = ChildUsage(cpu, peak, time.monotonic() - started)
        if killed_for == "cancelled":
            raise ExtractionCancelled(f"{file_name}: the request ended; extraction stopped")
        if killed_for == "wall" or child.returncode in (-signal.SIGXCPU, -signal.SIGKILL) or (
            child.returncode != 0 and cpu >= limits.max_cpu_seconds
        ):
            raise DocumentTooLarge(
                f"reading the document took more than {limits.max_cpu_seconds} s of CPU time", _CPU_SETTING
            )
        try:
            answer = json.loads(result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            answer = None
        if child.returncode != 0 or answer is None:
            # A library that died of the address-space limit in C rather than with MemoryError.
            raise DocumentTooLarge(
                f"reading the document needed more than {limits.max_memory_bytes / 1e6:,.0f} MB of memory",
                _MEMORY_SETTING,
            )
    if "rejected" in answer:
        if answer.get("setting"):
            raise DocumentTooLarge(answer["rejected"], answer["setting"])
        raise DocumentRejected(answer["rejected"])
    sections = [Section(tuple(headings), blocks) for headings, blocks in answer["sections"]]
    return ExtractedDocument(answer["title"], answer["format"], sections)


def _resident_peak(pid: int) -> int:
    """The child's peak resident memory so far (VmHWM of its own address space, since exec;
    its rusage's ru_maxrss would count the server's, inherited through fork)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_main(extract_module, arguments: list[str]) -> None:
    """In the child: set the limits, extract, write the result (or the rejection) as JSON."""
    import resource

    header, source, result = json.loads(arguments[0]), Path(arguments[1]), Path(arguments[2])
    limits = extract_module.ExtractionLimits(**header["limits"])
    resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    # SIGXCPU at the soft limit ends the child; the hard one, a second later, kills it if not.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.max_cpu_seconds, limits.max_cpu_seconds + 1))
    try:
        answer = _answer(extract_module, header["file_name"], source.read_bytes(), limits)
    except MemoryError:
        answer = {
            "rejected": f"reading the document needed more than {limits.max_memory_bytes / 1e6:,.0f} MB of memory",
            "setting": _MEMORY_SETTING,
        }
    text = json.dumps(answer, ensure_ascii=False)
    temporary = result.with_suffix(".partial")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(result)  # whole or absent: a child killed while writing leaves no result


def _answer(extract_module, file_name: str, data: bytes, limits) -> dict:
    try:
        document = extract_module.extract(file_name, data, limits)
        answer: dict = {
            "title": document.title,
            "format": document.format,
            "sections": [[list(s.headings), s.blocks] for s in document.sections],
        }
    except extract_module.DocumentRejected as exc:
        if exc.__context__ is not None and _virtual_peak() >= 0.9 * limits.max_memory_bytes:
            # A library's error near the address-space limit (lxml says "unknown error") is
            # the limit, not a malformed file.
            raise MemoryError(str(exc)) from exc
        answer = {"rejected": str(exc.args[0]) if exc.args else str(exc), "setting": getattr(exc, "setting", None)}
        if answer["setting"]:  # the message without the "(SETTING)" the parent's exception adds again
            answer["rejected"] = str(exc).removesuffix(f" ({answer['setting']})")
    return answer


def _virtual_peak() -> int:
    """This process's peak address space (VmPeak), what RLIMIT_AS bounds."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
