"""Text the plugin prints from a pod's log or a status (logTail, messages, names), made safe for
a terminal: terminal escape sequences (colours, cursor moves, window titles, hyperlinks, OSC 52
clipboard writes) and every other control character are removed; line breaks and tabs stay, a
carriage return becomes a line break (a progress bar's updates one a line, never text written
over other text)."""

from __future__ import annotations

import re

#: ESC sequences: CSI (ESC [ ... final byte), OSC, DCS, SOS, PM and APC strings (ended by BEL
#: or ST, ESC \\), and the two-character ones (ESC and one byte); the C1 forms of CSI and OSC.
_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]")
#: Control characters left once the sequences are gone: C0 but tab and line feed, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: The start of a sequence that the next chunk may finish, at the end of a chunk.
_UNFINISHED = re.compile(
    r"(?:\x1b(?:\[[0-?]*[ -/]*|[\]PX^_][^\x07\x1b\x9c]*\x1b?|[ -/]*)"
    r"|\x9b[0-?]*[ -/]*|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*\x1b?)$")
#: How much of an unfinished escape sequence a stream holds back for its next chunk.
_HOLD = 512


def printable(text: str) -> str:
    """`text` without terminal escape sequences and control characters (but \\n and \\t)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


class PrintableStream:
    """printable() over a stream of text chunks: a sequence split across two chunks is still
    recognised whole (up to _HOLD characters; a longer unfinished one is dropped as control
    characters are)."""

    def __init__(self) -> None:
        self._rest = ""

    def feed(self, chunk: str) -> str:
        text = self._rest + chunk
        self._rest = ""
        unfinished = _UNFINISHED.search(text, max(len(text) - _HOLD, 0))
        if unfinished:
            text, self._rest = text[:unfinished.start()], unfinished.group()
        if text.endswith("\r"):  # maybe the first half of \r\n
            text, self._rest = text[:-1], "\r" + self._rest
        return printable(text)

    def close(self) -> str:
        rest, self._rest = self._rest, ""
        return printable(rest)
