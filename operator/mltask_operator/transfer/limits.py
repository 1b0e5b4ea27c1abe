"""Bounds of the download step, from the step contract's environment.

MLTASK_DOWNLOAD_MAX_BYTES bounds the bytes downloaded per input, MLTASK_UNPACK_MAX_BYTES the
bytes an archive unpacks to; the operator sets both to the task's working volume size
(spec.runtime.workVolume.size), so data that cannot fit fails at once, naming the bound, instead
of filling the volume. Unset (a step run by hand): no bound on bytes. An archive also has at most
MLTASK_UNPACK_MAX_MEMBERS members (100,000) and symlink targets of at most 4 KiB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mltask_operator.transfer.errors import ContractError

DEFAULT_MAX_MEMBERS = 100_000
MAX_LINK_TARGET = 4096


@dataclass(frozen=True)
class Limits:
    download_bytes: int | None = None
    unpack_bytes: int | None = None
    members: int = DEFAULT_MAX_MEMBERS
    link_target: int = MAX_LINK_TARGET

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        return cls(download_bytes=_bytes(env, "MLTASK_DOWNLOAD_MAX_BYTES"),
                   unpack_bytes=_bytes(env, "MLTASK_UNPACK_MAX_BYTES"),
                   members=_bytes(env, "MLTASK_UNPACK_MAX_MEMBERS") or DEFAULT_MAX_MEMBERS)


def _bytes(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ContractError(f"{name}={raw!r} must be a positive whole number")
    return int(raw)
