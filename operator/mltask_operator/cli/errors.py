"""What the plugin tells the user when something fails: one line, naming what failed."""

from __future__ import annotations

import json

from mltask_operator.cli.printable import printable
from mltask_operator.kinds import Kind


class CliError(Exception):
    """What the user is told on stderr, without a traceback; the command exits 1."""


class UsageError(Exception):
    """Bad usage found after the arguments were parsed (a file that holds no valid Pipeline,
    an unknown --param): the command exits 2 before any API call."""


class ApiCallError(CliError):
    """An API call failed: `status` is the HTTP status (0 when the server was not reached),
    `server` what the API server said."""

    def __init__(self, message: str, status: int, server: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server = server or message


def one_line(text: object) -> str:
    """`text` with each run of whitespace, line breaks included, as one space (and without
    terminal escape sequences: a server's message may quote what a user wrote)."""
    return " ".join(printable(str(text)).split())


def server_message(body: str | bytes | None, reason: str | None) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
        message = json.loads(text or "").get("message")
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = None
    return one_line(message or reason or "no message")


def api_error_message(status: int, message: str, verb: str, kind: Kind, name: str | None,
                      namespace: str | None) -> str:
    """One line naming what failed: `mltask x not found in namespace ns`, or for a 403 the
    verb and resource that were refused."""
    where = f"in namespace {namespace}" if namespace else "in any namespace"
    obj = f"{kind.qualified} {name!r}" if name else kind.qualified
    if status == 404:
        if verb == "create" and message.startswith("namespaces "):
            return f"cannot create {obj}: namespace {namespace} not found"
        if name and verb != "create":
            return f"{kind.singular} {name} not found {where}"
        return f"the server has no {kind.qualified} (are the CRDs installed?): {message}"
    if status == 403:
        return f"forbidden: you may not {verb} {obj} {where}: {message}"
    if status == 401:
        return f"unauthorized: the API server refused the kubeconfig's credentials: {message}"
    if status == 409 and verb == "create":
        if name:
            return f"{kind.singular} {name} already exists {where} (AlreadyExists)"
        return f"cannot create {obj} {where}: the generated name is taken: {message}"
    if status == 409:
        return f"conflict: {obj} changed while this command ran: {message}"
    if status in (400, 422):
        return f"the API server refused to {verb} {obj} {where}: {message}"
    if status == 0:
        return f"cannot {verb} {obj}: {message}"
    return f"cannot {verb} {obj} {where}: HTTP {status}: {message}"
