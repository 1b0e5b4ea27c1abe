"""Pure: a Pipeline's task graph: dependencies (explicit and implied by fromTask) and validation."""

from __future__ import annotations

from mltask_operator.api.v1alpha1.mltask import TaskType
from mltask_operator.api.v1alpha1.pipeline import PipelineSpec, PipelineTask


def dependencies(task: PipelineTask) -> list[str]:
    """dependsOn plus the tasks whose outputs the task's inputs name, without repeats."""
    deps = list(task.depends_on or [])
    for ref in task.spec.input.upstreams().values():
        if ref not in deps:
            deps.append(ref)
    return deps


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
    if not problems:
        cycle = find_cycle(graph(spec))
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems

