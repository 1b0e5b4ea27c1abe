"""Pure: a Pipeline's task graph: dependencies (explicit, implied by fromTask and by the tasks
a `when` reads) and validation."""

from __future__ import annotations

from mltask_operator import pipeline_when
from mltask_operator.api.v1alpha1.mltask import TaskType
from mltask_operator.api.v1alpha1.pipeline import PipelineSpec, PipelineTask


def dependencies(task: PipelineTask) -> list[str]:
    """dependsOn, the tasks whose outputs the task's inputs name and the tasks its `when`
    reads, without repeats."""
    deps = list(task.depends_on or [])
    refs = list(task.spec.input.upstreams().values())
    if task.when:
        refs += pipeline_when.references(task.when)
    for ref in refs:
        if ref not in deps:
            deps.append(ref)
    return deps


def order(spec: PipelineSpec) -> list[PipelineTask]:
    """The tasks, each after the tasks it depends on (spec order otherwise); the graph must be
    acyclic (validate)."""
    deps = graph(spec)
    by_name = {t.name: t for t in spec.tasks}
    done: set[str] = set()
    out: list[PipelineTask] = []

    def visit(name: str) -> None:
        if name in done or name not in by_name:
            return
        done.add(name)
        for dep in deps[name]:
            visit(dep)
        out.append(by_name[name])

    for t in spec.tasks:
        visit(t.name)
    return out


def graph(spec: PipelineSpec) -> dict[str, list[str]]:
    return {t.name: dependencies(t) for t in spec.tasks}


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first node repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in deps.get(node, []):
            if dep not in color:
                continue
            if color[dep] == grey:
                return stack[stack.index(dep):] + [dep]
            if color[dep] == white and (found := visit(dep)):
                return found
        stack.pop()
        color[node] = black
        return None

    for node in deps:
        if color[node] == white and (found := visit(node)):
            return found
    return None


def validate(spec: PipelineSpec) -> list[str]:
    """Problems with the graph, each naming its task. The API server's CEL rules refuse most of
    these at apply time; cycles can only be found here."""
    problems: list[str] = []
    by_name: dict[str, PipelineTask] = {}
    for t in spec.tasks:
        if t.name in by_name:
            problems.append(f"task {t.name}: duplicate task name")
        by_name[t.name] = t
    for t in spec.tasks:
        for dep in t.depends_on or []:
            if dep == t.name:
                problems.append(f"task {t.name}: depends on itself")
            elif dep not in by_name:
                problems.append(f"task {t.name}: dependsOn names unknown task {dep}")
        for kind, up_name in t.spec.input.upstreams().items():
            up = by_name.get(up_name)
            where = f"task {t.name}: input.{kind}.fromTask"
            if up_name == t.name:
                problems.append(f"{where} names the task itself")
            elif up is None:
                problems.append(f"{where} names unknown task {up_name}")
            elif (up.spec.type == TaskType.PREPROCESSING) != (kind == "dataset"):
                problems.append(f"{where} {up_name} is a {up.spec.type} task and produces no "
                                f"{kind}")
        if t.when:
            where = f"task {t.name}: when {t.when!r}"
            why = pipeline_when.check(t.when)
            if why:
                problems.append(f"{where}: {why}")
            for ref in pipeline_when.references(t.when):
                if ref == t.name:
                    problems.append(f"{where} reads the task itself")
                elif ref not in by_name:
                    problems.append(f"{where} names unknown task {ref}")
    if not problems:
        cycle = find_cycle(graph(spec))
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems

