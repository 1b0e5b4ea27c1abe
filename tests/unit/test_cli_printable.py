"""The plugin prints a pod's log and status text (logTail, messages) without terminal escape
sequences or control characters: a run step cannot recolour, move, retitle or write the
clipboard of the terminal of whoever runs `kubectl mltask describe` or `logs`."""

from __future__ import annotations

import io

import pytest

from harness.cases import Case
from mltask_operator.cli import render
from mltask_operator.cli.errors import one_line
from mltask_operator.cli.printable import PrintableStream, printable

CASES = [
    Case("plain text stays", "epoch 3/10\tloss 0.25\n", "epoch 3/10\tloss 0.25\n"),
    Case("colours go", "\x1b[31;1mError\x1b[0m: boom", "Error: boom"),
    Case("cursor moves and clears go", "a\x1b[2J\x1b[H\x1b[1Ab\x1b[?25l", "ab"),
    Case("a window title (OSC, BEL) goes", "\x1b]0;pwned\x07x", "x"),
    Case("a clipboard write (OSC 52, ST) goes", "\x1b]52;c;ZWNobyBoaQ==\x1b\\x", "x"),
    Case("a hyperlink keeps its text", "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\",
         "click"),
    Case("a DCS string goes", "\x1bPq#0;2;0;0;0\x1b\\x", "x"),
    Case("two-character escapes go", "\x1bc\x1b7x\x1b8\x1b(B", "x"),
    Case("C1 CSI goes", "\x9b31mred", "red"),
    Case("other control characters go", "a\x00b\x07c\x08d\x7fe\x85f\x0bg\x0ch", "abcdefgh"),
    Case("a carriage return is a line break", "10%\r50%\r100%\r\ndone", "10%\n50%\n100%\ndone"),
    Case("a lone escape goes", "a\x1b", "a"),
    Case("unicode stays", "précision ✓ 精度", "précision ✓ 精度"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_printable(case: Case) -> None:
    assert printable(case.given) == case.expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_a_stream_cut_anywhere_prints_what_the_whole_text_does(case: Case, size: int) -> None:
    stream = PrintableStream()
    text = case.given
    out = "".join(stream.feed(text[i:i + size]) for i in range(0, len(text), size))
    assert out + stream.close() == case.expected


def test_an_unfinished_sequence_is_held_back_only_so_long() -> None:
    stream = PrintableStream()
    assert stream.feed("a\x1b]0;") == "a"
    assert "x" * 1000 in stream.feed("x" * 1000)  # never closed: not held forever
    assert stream.close() == ""


def test_write_stream_strips_escapes_split_across_chunks() -> None:
    out = io.StringIO()
    render.write_stream([b"ok \x1b[3", b"1mred\x1b", b"[0m\r\n", b"\x1b]0;t\x07end\n"], out)
    assert out.getvalue() == "ok red\nend\n"


def test_describe_prints_no_escape_sequence_from_status() -> None:
    task = {
        "metadata": {"name": "t\x1b[2J", "namespace": "ml"},
        "spec": {"type": "training"},
        "status": {
            "status": "failed", "message": "run step failed: \x1b]0;pwned\x07boom\x1b[31m!",
            "steps": [{"name": "run", "phase": "Failed", "attempt": 1,
                       "message": "Error (exit code 1)\x1b[1A",
                       "logTail": "line 1\n\x1b[31mTraceback\x1b[0m\r\nValueError: x\x07"}],
            "metrics": {"loss\x1b[8m": 0.5},
            "conditions": [{"type": "Failed", "status": "True", "reason": "Failed",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                            "message": "\x1b]52;c;aGk=\x1b\\boom"}],
        },
    }
    text = render.describe_task(task)
    assert not any(c in text for c in "\x1b\x07\x9b\r")
    assert "run step failed: boom!" in text
    assert "    Traceback\n    ValueError: x" in text
    pipeline = {"metadata": {"name": "p"}, "spec": {}, "status": {
        "message": "Task a failed: \x1b[2Jx",
        "tasks": [{"name": "a", "status": "failed", "message": "\x1b[31mboom"}]}}
    text = render.describe_pipeline(pipeline)
    assert "\x1b" not in text and "Task a failed: x" in text


def test_a_server_message_is_printed_without_escapes() -> None:
    assert one_line("admission webhook said:\n\x1b[31mno\x1b[0m") == "admission webhook said: no"
