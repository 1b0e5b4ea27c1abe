"""The plugin's API calls: the operator's own (clients.kube, generic over the kind), each
failure turned into one line for the user; and the pod logs it streams."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

import urllib3
import yaml
from kubernetes import client, config

from mltask_operator.cli.changes import StepPod
from mltask_operator.cli.errors import ApiCallError, CliError, api_error_message, server_message
from mltask_operator.cli.printable import printable
from mltask_operator.cli.render import json_lines, write_stream
from mltask_operator.cli.targets import Target, context_namespace
from mltask_operator.clients.kube import Conflict, Gone, Kube
from mltask_operator.kinds import POD, POD_LOG, WORKFLOW, Kind

#: The container of a step pod that runs the step's image (Argo's `wait` runs beside it).
MAIN_CONTAINER = "main"


#: How long `logs -f` waits for a step's container to start (its init container runs first).
FOLLOW_START_WAIT = 300


#: The page size of the listing `list -w` starts from.
LIST_PAGE = 500


#: How long one watch request of `list -w` lasts (the API server ends it, and it is reopened
#: from the last resourceVersion seen).
WATCH_SECONDS = 300


T = TypeVar("T")


class Session:
    """The plugin's API calls, through the operator's own (clients.kube.Kube), each turning an
    API error into a one-line CliError."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.kube = Kube(api)

    def call(self, fn: Callable[[], T], verb: str, kind: Kind, name: str | None = None,
             namespace: str | None = None) -> T:
        try:
            return fn()
        except (Conflict, Gone) as e:  # what a reconcile makes of a 409 or 404
            if not isinstance(e.__cause__, client.ApiException):
                raise
            raise self._error(e.__cause__, verb, kind, name, namespace) from e
        except client.ApiException as e:
            raise self._error(e, verb, kind, name, namespace) from e
        except urllib3.exceptions.HTTPError as e:
            raise ApiCallError(f"cannot reach the API server at {self.api.configuration.host}: "
                               f"{e}", 0) from e

    @staticmethod
    def _error(e: client.ApiException, verb: str, kind: Kind, name: str | None,
               namespace: str | None) -> ApiCallError:
        message = server_message(e.body, e.reason)
        return ApiCallError(api_error_message(e.status or 0, message, verb, kind, name,
                                              namespace), e.status or 0, message)

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it is not found."""
        return self.call(lambda: self.kube.get(kind, namespace, name), "get", kind, name,
                         namespace)

    def _get(self, kind: Kind, name: str) -> dict[str, Any]:
        found = self.find(kind, self.namespace, name)
        if found is None:
            raise ApiCallError(api_error_message(404, "not found", "get", kind, name,
                                                 self.namespace), 404, "not found")
        return found

    def get(self, target: Target) -> dict[str, Any]:
        return self._get(target.kind, target.name)

    def get_workflow(self, name: str) -> dict[str, Any]:
        return self._get(WORKFLOW, name)

    def create(self, kind: Kind, body: dict[str, Any], dry_run: bool = False
               ) -> dict[str, Any]:
        """A new object in its metadata.namespace (named by metadata.name, which must be free,
        or metadata.generateName); `dry_run`: checked by the API server, not stored."""
        meta = body["metadata"]
        return self.call(lambda: self.kube.create_new(kind, meta["namespace"], body,
                                                      dry_run=dry_run),
                         "create", kind, meta.get("name"), meta["namespace"])

    def patch(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.kube.patch(target.kind, self.namespace, target.name, body),
                         "patch", target.kind, target.name, self.namespace)

    def _where(self, all_namespaces: bool) -> str | None:
        return None if all_namespaces else self.namespace

    def list_all(self, kind: Kind, all_namespaces: bool, fields: str | None,
             labels: str | None) -> list[dict[str, Any]]:
        namespace = self._where(all_namespaces)
        return self.call(lambda: list(self.kube.list_all(kind, namespace, labels=labels,
                                                     fields=fields)),
                         "list", kind, namespace=namespace)

    def list_page(self, kind: Kind, all_namespaces: bool, fields: str | None,
                  labels: str | None, limit: int, token: str | None = None) -> dict[str, Any]:
        """One page of at most `limit` objects (the API server's chunking), after `token`."""
        namespace = self._where(all_namespaces)
        return self.call(lambda: self.kube.list_page(kind, namespace, labels=labels,
                                                     fields=fields, limit=limit, token=token),
                         "list", kind, namespace=namespace)

    def list_snapshot(self, kind: Kind, all_namespaces: bool, fields: str | None,
                      labels: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every object, page by page, and the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.list_page(kind, all_namespaces, fields, labels, LIST_PAGE, token)
            items += page.get("items") or []
            token = page["metadata"].get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]

    def watch(self, kind: Kind, all_namespaces: bool, fields: str | None,
              labels: str | None, resource_version: str) -> Iterator[dict[str, Any]]:
        """The watch events after `resource_version`, until the server ends the watch (after
        WATCH_SECONDS) or the connection drops."""
        namespace = self._where(all_namespaces)
        resp = self.call(lambda: self.kube.watch(kind, namespace, labels=labels, fields=fields,
                                                 resource_version=resource_version,
                                                 seconds=WATCH_SECONDS),
                         "watch", kind, namespace=namespace)
        try:
            yield from json_lines(resp.stream(None))
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return  # reopened from the last resourceVersion seen
        finally:
            resp.close()
            resp.release_conn()

    def stream_logs(self, task: str, chosen: StepPod, follow: bool, tail: int | None,
                    out: TextIO) -> None:
        what = (f"pod {chosen.pod} (step {chosen.step}, attempt {chosen.attempt}) of "
                f"mltask {task}")
        deadline = time.monotonic() + FOLLOW_START_WAIT
        while True:
            try:
                resp = self.call(lambda: self.kube.pod_log(
                    self.namespace, chosen.pod, MAIN_CONTAINER, follow=follow, tail=tail),
                    "get", POD_LOG, chosen.pod, self.namespace)
                break
            except ApiCallError as e:
                # -f on a step whose container has not started yet (its init container still
                # runs): wait for it to start, as a user following a step about to run expects
                if follow and e.status == 400 and "waiting to start" in e.server \
                        and time.monotonic() < deadline:
                    time.sleep(1)
                    continue
                if e.status == 404 and chosen.log_tail and not self._pod_exists(chosen.pod):
                    # the pod is gone, but the task's status kept why the step failed
                    print(f"{what} is gone; its last log lines, kept in the task's status:",
                          file=sys.stderr)
                    out.write(printable(chosen.log_tail).rstrip("\n") + "\n")
                    return
                err = self._log_error(e, what, chosen)
                if err is e:
                    raise
                raise err from e
        try:
            write_stream(resp.stream(None), out)
        except urllib3.exceptions.HTTPError as e:
            raise CliError(f"the log stream of {what} broke off: {e}") from e
        finally:
            resp.release_conn()

    def _log_error(self, e: ApiCallError, what: str, chosen: StepPod) -> CliError:
        """What a failed log read means for the user."""
        if e.status == 404 and not self._pod_exists(chosen.pod):
            return CliError(f"{what} not found in namespace {self.namespace}: deleted, or not "
                            "created yet")
        if e.status in (0, 401, 403):
            return e
        # e.g. no kubelet answers for the pod's node, or the container has not started
        return CliError(f"cannot read the logs of {what}: {e.server} (HTTP {e.status})")

    def _pod_exists(self, pod: str) -> bool:
        return self.call(lambda: self.kube.pod_exists(self.namespace, pod), "get", POD, pod,
                         self.namespace)


def connect(kubeconfig: str | None, context: str | None,
            namespace: str | None) -> Session:
    """A session from the kubeconfig (`--kubeconfig`, else $KUBECONFIG or ~/.kube/config)."""
    cfg = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=cfg,
            persist_config=False)
        if namespace is None:
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig)
            namespace = context_namespace(contexts, active, context)
    except (config.ConfigException, OSError, yaml.YAMLError) as e:
        source = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CliError(f"cannot load the kubeconfig ({source}): {e}") from e
    cfg.retries = 0  # one line of error, not urllib3's retry warnings, when unreachable
    return Session(client.ApiClient(cfg), namespace)
