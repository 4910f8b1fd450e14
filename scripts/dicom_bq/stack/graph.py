"""A picture of a planned stack: `dicom-bq plan --format mermaid` or `--format dot`.

What `pulumi stack graph` draws for a deployed stack (pulumi/pulumi pkg/graph/dotconv: a node
per resource, an edge per dependency, parent edges apart), drawn from the offline plan: every
resource the program registers and the resources it depends on, each component a box around
its children (where `pulumi stack graph` draws parent edges). A dependency's arrow points from
what is created first to what waits for it, so the picture reads top down in creation order.
Grants (IAM members) are hexagons naming their role, the IAM propagation waits are rounded
naming their duration.

Text only, no Graphviz or Mermaid needed; the same plan draws the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dicom_bq.stack.plan import Plan, PlannedResource

WAIT_TYPE = "time:index/sleep:Sleep"


class Kind(StrEnum):
    COMPONENT = "component"
    GRANT = "grant"
    WAIT = "wait"
    RESOURCE = "resource"


class EdgeKind(StrEnum):
    DEPENDENCY = "dependency"  # target depends on source (source is created first)


@dataclass(frozen=True)
class Node:
    id: str
    kind: Kind
    lines: tuple[str, ...]  # the label, line by line: name, kind of resource, detail


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind


@dataclass(frozen=True)
class Graph:
    title: str
    nodes: tuple[Node, ...]
    parents: dict[str, str]  # node id -> its parent's node id
    edges: tuple[Edge, ...]  # dependencies

    def children(self, parent: str | None) -> list[Node]:
        return [node for node in self.nodes if self.parents.get(node.id) == parent]


def kind_of(resource: PlannedResource) -> Kind:
    if not resource.custom:
        return Kind.COMPONENT
    if resource.type == WAIT_TYPE:
        return Kind.WAIT
    if "role" in resource.inputs and "member" in resource.inputs:
        return Kind.GRANT
    return Kind.RESOURCE


def short_type(token: str) -> str:
    """gcp:bigquery/dataset:Dataset -> bigquery Dataset; time:index/sleep:Sleep -> time Sleep;
    a component of this package (dicom-bq:index:DicomExportPath) -> DicomExportPath."""
    parts = token.split(":")
    if len(parts) != 3:
        return token
    package, module, name = parts
    if package == "dicom-bq":
        return name
    head = module.split("/", 1)[0]
    return f"{package if head == 'index' else head} {name}"


def _label(resource: PlannedResource, kind: Kind) -> tuple[str, ...]:
    lines = [resource.name, short_type(resource.type)]
    if kind is Kind.GRANT:
        lines.append(str(resource.inputs["role"]))
    elif kind is Kind.WAIT and resource.inputs.get("createDuration"):
        lines.append(f"wait {resource.inputs['createDuration']}")
    return tuple(lines)


def plan_graph(plan: Plan) -> Graph:
    """Nodes in the plan's order (dependencies first, stable), edges sorted by their nodes.

    The plan names parents and dependencies by resource name, and two resources of different
    types may share one (an alert's log metric and its alert policy). A plan lists what a
    resource depends on before it, so a shared name is drawn to each resource of that name
    listed earlier: most often one, never missing the real one."""
    by_name: dict[str, list[int]] = {}
    for index, resource in enumerate(plan.resources):
        by_name.setdefault(resource.name, []).append(index)

    def earlier(name: str | None, index: int) -> list[int]:
        return [i for i in by_name.get(name or "", []) if i < index]

    nodes = []
    parents: dict[str, str] = {}
    edges: set[tuple[int, int]] = set()
    for index, resource in enumerate(plan.resources):
        kind = kind_of(resource)
        nodes.append(Node(f"n{index}", kind, _label(resource, kind)))
        parent = earlier(resource.parent, index)
        if parent:
            parents[f"n{index}"] = f"n{parent[0]}"
        edges.update((i, index) for name in resource.depends_on for i in earlier(name, index))
    return Graph(
        title=f"dicom-bq {plan.stack}",
        nodes=tuple(nodes),
        parents=parents,
        edges=tuple(
            Edge(f"n{source}", f"n{target}", EdgeKind.DEPENDENCY)
            for source, target in sorted(edges)
        ),
    )


# -- Mermaid (https://mermaid.js.org/syntax/flowchart.html) -------------------------------------

# Kept as they are in a quoted label; every other character is written as Mermaid's entity code
# (#35; for '#': "Entity codes to escape characters", flowchart syntax), so quotes, brackets,
# '#', '<' and '&' cannot end the label or be read as markup.
_MERMAID_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_./:@,+=()"
)
_MERMAID_SHAPES = {
    Kind.GRANT: ("{{", "}}"),
    Kind.WAIT: ("([", "])"),
    Kind.RESOURCE: ("[", "]"),
}


def mermaid_text(text: str) -> str:
    return "".join(c if c in _MERMAID_PLAIN else f"#{ord(c)};" for c in text)


def _mermaid_label(node: Node) -> str:
    return '"' + "<br/>".join(mermaid_text(line) for line in node.lines) + '"'


def mermaid(plan: Plan) -> str:
    """A flowchart: each component a subgraph holding its children, each other resource a node,
    each dependency an arrow (to a subgraph when the dependency is a component)."""
    graph = plan_graph(plan)
    lines = ["flowchart TD"]

    def draw(parent: str | None, depth: int) -> None:
        indent = "    " * depth
        for node in graph.children(parent):
            if node.kind is Kind.COMPONENT:
                lines.append(f"{indent}subgraph {node.id}[{_mermaid_label(node)}]")
                draw(node.id, depth + 1)
                lines.append(f"{indent}end")
            else:
                opening, closing = _MERMAID_SHAPES[node.kind]
                lines.append(f"{indent}{node.id}{opening}{_mermaid_label(node)}{closing}")

    draw(None, 1)
    lines += [f"    {edge.source} --> {edge.target}" for edge in graph.edges]
    return "\n".join(lines) + "\n"


# -- Graphviz DOT (https://graphviz.org/doc/info/lang.html) -------------------------------------

_DOT_SHAPES = {
    Kind.GRANT: "hexagon",
    Kind.WAIT: "box, style=rounded",
    Kind.RESOURCE: "box",
}


def dot_string(text: str) -> str:
    """A DOT double-quoted string: backslash and quote escaped, a line break as \\n (in a label,
    a centred line), '&' as &amp; (Graphviz reads HTML entities in any label); other control
    characters, which no name holds, as a space."""
    escaped = []
    for c in text:
        if c == "&":
            escaped.append("&amp;")
        elif c in '\\"':
            escaped.append("\\" + c)
        elif c == "\n":
            escaped.append("\\n")
        elif ord(c) < 32 or ord(c) == 127:
            escaped.append(" ")
        else:
            escaped.append(c)
    return '"' + "".join(escaped) + '"'


def dot(plan: Plan) -> str:
    """A digraph: each component a cluster holding its children, each other resource a node,
    each dependency an edge. An edge to or from a component goes to an invisible point in its
    cluster, clipped at the cluster's border (compound=true, lhead/ltail)."""
    graph = plan_graph(plan)
    components = {node.id for node in graph.nodes if node.kind is Kind.COMPONENT}
    anchored = {e.source for e in graph.edges} | {e.target for e in graph.edges}
    lines = [
        f"digraph {dot_string(graph.title)} {{",
        "    compound=true;",
        "    rankdir=TB;",
        '    node [shape=box, fontname="Helvetica", fontsize=10];',
    ]

    def draw(parent: str | None, depth: int) -> None:
        indent = "    " * depth
        for node in graph.children(parent):
            label = dot_string("\n".join(node.lines))
            if node.kind is Kind.COMPONENT:
                lines.append(f"{indent}subgraph cluster_{node.id} {{")
                lines.append(f"{indent}    label={label};")
                lines.append(f"{indent}    style=rounded;")
                if node.id in anchored:
                    lines.append(f'{indent}    {node.id} [shape=point, style=invis, label=""];')
                draw(node.id, depth + 1)
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{node.id} [label={label}, shape={_DOT_SHAPES[node.kind]}];")

    draw(None, 1)
    for edge in graph.edges:
        clip = [
            f"{end}=cluster_{node}"
            for end, node in (("ltail", edge.source), ("lhead", edge.target))
            if node in components
        ]
        attributes = f" [{', '.join(clip)}]" if clip else ""
        lines.append(f"    {edge.source} -> {edge.target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"
