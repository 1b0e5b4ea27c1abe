"""What the bench reads to measure: /proc (CPU, RSS), the API server's /metrics and audit log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: (verb, resource[/subresource], "dry run" or "") — the key of a request count
Key = tuple[str, str, str]
_SAMPLE = re.compile(r'^apiserver_request_total\{([^}]*)\} ([0-9.eE+]+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_AUDIT_VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST",
                "update": "PUT", "patch": "PATCH", "delete": "DELETE",
                "deletecollection": "DELETE"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine() -> dict[str, object]:
    """Cores, RAM, CPU model and kernel of this machine."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {"cores": os.cpu_count(), "ram_gib": round(mem_kib / 1024 / 1024, 1),
            "cpu": model, "kernel": os.uname().release}


def parse_request_totals(text: str) -> Counter[Key]:
    """apiserver_request_total summed over codes and scopes, by (verb, resource, dry run)."""
    out: Counter[Key] = Counter()
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(1)))
        if not labels.get("resource"):
            continue  # /metrics, /healthz...: no resource, never the operator's
        resource = labels["resource"] + (f"/{labels['subresource']}"
                                         if labels.get("subresource") else "")
        out[(labels["verb"], resource, "dry run" if labels.get("dry_run") else "")] += int(
            float(m.group(2)))
    return out


class AuditTail:
    """Reads the API server's audit log (JSON lines) from where it last stopped, following a
    rotation (the API server renames audit.log to audit-<time>.log at its size limit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inode, self.offset = self._stat()

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0, 0
        return st.st_ino, st.st_size

    def _read(self, path: Path, offset: int) -> tuple[list[str], int]:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        return data[:end].decode(errors="replace").splitlines(), offset + end

    def read(self) -> list[str]:
        lines: list[str] = []
        inode, _ = self._stat()
        if inode != self.inode and self.inode:
            for rotated in self.path.parent.glob(self.path.stem + "-*" + self.path.suffix):
                if rotated.stat().st_ino == self.inode:
                    lines += self._read(rotated, self.offset)[0]
            self.inode, self.offset = inode, 0
        if inode:
            self.inode = inode
            new, self.offset = self._read(self.path, self.offset)
            lines += new
        return lines


def count_audit(lines: list[str], user: str) -> Counter[Key]:
    """The requests of `user` in audit lines, by (verb, resource, dry run): each once (a
    watch at ResponseStarted, anything else at ResponseComplete)."""
    out: Counter[Key] = Counter()
    needle = f'"username":"{user}"'
    for line in lines:
        if needle not in line:
            continue
        event = json.loads(line)
        verb = event.get("verb", "")
        if event.get("stage") != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}"
                                              if ref.get("subresource") else "")
        dry = "dry run" if "dryRun=" in event.get("requestURI", "") else ""
        out[(_AUDIT_VERBS.get(verb, verb.upper()), resource, dry)] += 1
    return out


@dataclass
class Sample:
    """Everything measured at one instant."""

    t: float
    cpu: dict[str, float]
    system: tuple[float, float]
    requests: Counter[Key]
    bench: Counter[Key]
    operator: Counter[Key]


@dataclass
class Window:
    """What happened between two samples."""

    seconds: float
    cpu: dict[str, float]  # CPU seconds per process
    busy: float  # CPU seconds used on the whole machine
    capacity: float  # CPU seconds the machine had (cores x seconds)
    all_requests: Counter[Key]  # every request the API server served (/metrics)
    bench: Counter[Key]  # the bench's own requests (counted by its client)
    operator: Counter[Key]  # the operator's requests (audit log, by its identity)
    notes: list[str] = field(default_factory=list)

    @property
    def others(self) -> Counter[Key]:
        """Requests neither the bench nor the operator made (the controller manager, the API
        server itself)."""
        out = self.all_requests.copy()
        out.subtract(self.bench)
        out.subtract(self.operator)
        return +out

    def other_cpu(self) -> float:
        """CPU seconds used by processes the bench does not know (other runs on the machine)."""
        return max(0.0, self.busy - sum(self.cpu.values()))


class Meter:
    """Samples CPU of named processes, the API server's request counters, the bench client's
    own counts and the operator's audit records, and turns two samples into a Window."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.audit = AuditTail(cluster.cp.audit_log)
        self._operator_counts: Counter[Key] = Counter()

    def _pids(self) -> dict[str, int]:
        pids = dict(self.cluster.cp.pids)
        pids["bench"] = os.getpid()
        op = self.cluster.operator
        if op is not None and op.proc is not None and op.proc.poll() is None:
            pids["operator"] = op.proc.pid
        return pids

    def sample(self) -> Sample:
        cpu = {}
        for name, pid in self._pids().items():
            with contextlib.suppress(OSError):
                cpu[name] = cpu_seconds(pid)
        cpu["operator"] = cpu.get("operator", 0.0) + self.cluster.dead_operator_cpu
        status, body = self.cluster.cp.get("/metrics", timeout=30)
        if status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {status}")
        requests = parse_request_totals(body.decode())
        bench = self.cluster.counter.snapshot()
        # the metrics scrape itself is no resource request: it is not in `requests`
        return Sample(time.monotonic(), cpu, system_cpu(), requests, bench,
                      self.operator_counts())

    def operator_counts(self) -> Counter[Key]:
        """The operator's requests so far (audit log), read up to now."""
        self._operator_counts += count_audit(self.audit.read(), self.cluster.operator_user)
        return self._operator_counts.copy()

    @staticmethod
    def window(a: Sample, b: Sample) -> Window:
        def diff(x: Counter[Key], y: Counter[Key]) -> Counter[Key]:
            out = y.copy()
            out.subtract(x)
            return +out

        cpu = {name: b.cpu[name] - a.cpu.get(name, 0.0) for name in b.cpu}
        return Window(
            seconds=b.t - a.t, cpu=cpu, busy=b.system[0] - a.system[0],
            capacity=b.system[1] - a.system[1],
            all_requests=diff(a.requests, b.requests), bench=diff(a.bench, b.bench),
            operator=diff(a.operator, b.operator))


def quiet(meter_cluster, seconds: float = 5.0, threshold: float = 0.03,
          timeout: float = 180.0, step: float = 0.5) -> tuple[bool, float]:
    """Wait until the operator used under `threshold` of a core for `seconds` in a row.
    Returns (whether it got quiet, seconds waited)."""
    start = time.monotonic()
    op = meter_cluster.operator
    history: list[tuple[float, float]] = []
    while True:
        now = time.monotonic()
        try:
            history.append((now, cpu_seconds(op.proc.pid)))
        except OSError:
            return False, now - start
        while len(history) > 1 and now - history[1][0] >= seconds:
            history.pop(0)
        if now - history[0][0] >= seconds * 0.99:
            used = history[-1][1] - history[0][1]
            if used / (now - history[0][0]) < threshold:
                return True, now - start
        if now - start > timeout:
            return False, now - start
        time.sleep(step)
