"""`make bench`: the operator's scale figures (issue 13), each beside a floor from the same run.

Not part of the test suite (pytest's testpaths leave tests/bench out; no file is a test_*.py).
One run starts the test control plane as the integration tests do (harness.controlplane: etcd,
kube-apiserver, kube-controller-manager on loopback, with Argo's full Workflow CRD and the
repo's crds/), then the operator as a subprocess (harness.operator_proc) with its shipped
defaults (resync 60 s, 8 workers, leader election off). The operator runs under its own
ServiceAccount with the cluster-wide RBAC of manifests/, so the API server's audit log tells
its requests apart from the bench's and the controller manager's.

The client: the Kubernetes Python client, 16 threads (--threads), the same for the operator's
figures and for the floors. Every figure starts a fresh operator on a cluster holding none of
the previous figure's tasks (its namespaces are deleted with the operator stopped); a warm-up
task shows the operator's watches work before anything is timed.

Figures, in the order they run:
1. floors (no operator runs): the client creates N MLTasks, then the N Workflows the operator
   would create (the operator's own builder and settings), 16 threads; and at the steady rate,
   each task followed by its Workflow.
2. steady: R tasks/s for S s; latency from each create's return to its Workflow's ADDED event
   on the bench's watch: p50, p90, p99.
3. recovery, per cut mode (bench.cutproxy: blackhole, hang, refuse): the operator talks to the
   API server through a TCP proxy; the proxy cuts for 30 s, 100 tasks are created meanwhile
   (straight to the API server); the time from the connection's return until every one has its
   Workflow.
4. sigkill: 500 tasks at once; SIGKILL once 30 % of their Workflows exist, restart at once;
   Workflows per task (a duplicate is a second Workflow of one task) and the time from the
   restart until every task's status names its existing Workflow.
5. burst: N tasks at once; the time until all N Workflows exist. Requests and CPU per started
   task are measured over the burst, from the first create until the operator is quiet (under
   3 % of a core for 5 s): the operator's requests from the audit log, all requests from
   /metrics (apiserver_request_total) less the bench's own (counted by its client), CPU from
   /proc/<pid>/stat (utime + stime) of the operator, kube-apiserver and etcd.
6. finished tasks (idle, RSS): the burst's tasks are finished, then more are added up to each
   --finished count; at each, with the operator quiet, its requests per finished task per
   minute over --idle-window seconds (more than the 60 s resync), and its RSS (VmRSS, VmHWM
   for the peak) from /proc/<pid>/status.

How tasks become finished: no Argo controller runs, so the bench plays Argo's part. For the
burst's tasks it replaces each Workflow with the one Argo leaves when every step succeeded
(harness.argo_standin.succeed_all: `status.phase` and `status.nodes` as Argo v3.6 writes them;
the Workflow CRD has no status subresource), and the operator follows as it would under Argo.
The tasks beyond those (9,000 for 10,000) are seeded, as running 10,000 tasks through today's
operator would take most of an hour: each seeded task is created with the operator's
annotations of a task it finished itself (the template), its status is the template's under
the new name recomputed by the operator's own status function (mltask_operator.mltask_status), and
its Workflow is the operator's builder's output as Argo leaves it. The operator runs meanwhile
and sees every one arrive; the report counts the status writes it made for seeded tasks (0
means it agreed with what was seeded).

Everything is measured in the run; a figure that cannot be measured says why. `--json PATH`
writes every number, including the per-phase details the table leaves out.
"""
