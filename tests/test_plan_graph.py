"""`dicom-bq plan --format mermaid|dot`: the plan drawn, read back by small parsers of each
language (no Graphviz or Mermaid here), and the README's picture of prod kept true.

Regenerate the README's graph after an intended change with:  python -m tests.test_plan_graph
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.stack.graph import dot, mermaid
from dicom_bq.stack.plan import Plan, PlannedResource
from tests.conftest import cached_plan
from tests.inventory import ROOT, plan_example

runner = CliRunner()
README = ROOT / "README.md"
REGENERATE = "python -m tests.test_plan_graph"
BEGIN = "<!-- plan-graph prod: `python -m tests.test_plan_graph` regenerates it -->"
END = "<!-- /plan-graph -->"


@dataclass
class Drawn:
    """A graph as read back: boxes (components) and nodes by their name, and the edges between
    names; `parent` maps a name to the box it is drawn in."""

    nodes: dict[str, list[str]] = field(default_factory=dict)  # name -> the label's lines
    boxes: dict[str, list[str]] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)


def expected(plan: Plan) -> Drawn:
    drawn = Drawn()
    for r in plan.resources:
        (drawn.boxes if not r.custom else drawn.nodes)[r.name] = []
        if r.parent:
            drawn.parent[r.name] = r.parent
        drawn.edges |= {(dependency, r.name) for dependency in r.depends_on}
    return drawn


def same_shape(drawn: Drawn, plan: Plan) -> None:
    want = expected(plan)
    assert sorted(drawn.nodes) == sorted(want.nodes)
    assert sorted(drawn.boxes) == sorted(want.boxes)
    assert drawn.parent == want.parent
    assert drawn.edges == want.edges
    assert want.edges, "a plan without dependencies proves nothing here"


# -- Mermaid, read back -------------------------------------------------------------------------

_SUBGRAPH = re.compile(r'subgraph (n\d+)\["([^"]*)"\]')
_NODE = re.compile(r'(n\d+)(?:\{\{"([^"]*)"\}\}|\(\["([^"]*)"\]\)|\["([^"]*)"\])')
_EDGE = re.compile(r"(n\d+) --> (n\d+)")


def mermaid_lines(label: str) -> list[str]:
    """A label's text: Mermaid's entity codes (#35;) decoded, <br/> a line break."""
    assert re.fullmatch(r"[A-Za-z0-9 \-_./:@,+=()#;<>]*", label), label
    return [
        re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), line) for line in label.split("<br/>")
    ]


def read_mermaid(text: str) -> Drawn:
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    drawn, names, open_boxes = Drawn(), {}, []
    for line in lines[1:]:
        line = line.strip()
        if m := _SUBGRAPH.fullmatch(line):
            label = mermaid_lines(m.group(2))
            names[m.group(1)] = label[0]
            drawn.boxes[label[0]] = label
        elif line == "end":
            open_boxes.pop()
            continue
        elif m := _NODE.fullmatch(line):
            label = mermaid_lines(next(g for g in m.groups()[1:] if g is not None))
            names[m.group(1)] = label[0]
            drawn.nodes[label[0]] = label
        elif m := _EDGE.fullmatch(line):
            drawn.edges.add((names[m.group(1)], names[m.group(2)]))
            continue
        else:
            raise AssertionError(f"not a line of the drawing: {line!r}")
        if open_boxes:
            drawn.parent[label[0]] = names[open_boxes[-1]]
        if line.startswith("subgraph "):
            open_boxes.append(m.group(1))
    assert open_boxes == []
    return drawn


# -- DOT, read back: a parser of the language's grammar (https://graphviz.org/doc/info/lang.html)


_DOT_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:\\\\|\\"|\\(?!["\\])|[^"\\])*")|(?P<arrow>->|--)'
    r"|(?P<id>-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)|[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)"
    r"|(?P<punct>[{}\[\];,=]))"
)


def dot_tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        m = _DOT_TOKEN.match(text, position)
        assert m, f"not DOT at {text[position : position + 40]!r}"
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "string":
            # Lexically only \" is an escape (the grammar's "quoted string" rule); in a label,
            # \\ is a backslash and \n, \l, \r end a line.
            value = re.sub(
                r"\\(.)",
                lambda e: {"\\": "\\", "n": "\n", "l": "\n", "r": "\n", '"': '"'}.get(
                    e.group(1), "\\" + e.group(1)
                ),
                value[1:-1],
            ).replace("&amp;", "&")
            kind = "id"
        tokens.append((kind, value))
        position = m.end()
    return tokens


class DotParser:
    def __init__(self, text: str) -> None:
        self.tokens = dot_tokens(text)
        self.at = 0
        self.nodes: dict[str, dict[str, str]] = {}
        self.clusters: dict[str, dict[str, str]] = {}
        self.member_of: dict[str, str] = {}  # node or cluster -> the cluster it is in
        self.edges: list[tuple[str, str, dict[str, str]]] = []

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        assert token is not None, f"the text ends where {kind} {value or ''} was due"
        assert token[0] == kind, (token, kind, value)
        assert value in (None, token[1]), (token, kind, value)
        self.at += 1
        return token[1]

    def graph(self) -> str:
        assert self.take("id") in ("digraph", "graph")
        title = self.take("id") if self.peek() and self.peek()[0] == "id" else ""  # type: ignore[index]
        self.body(None)
        assert self.peek() is None, "text after the graph"
        return title

    def attributes(self) -> dict[str, str]:
        found: dict[str, str] = {}
        while self.peek() == ("punct", "["):
            self.take("punct", "[")
            while self.peek() != ("punct", "]"):
                key = self.take("id")
                self.take("punct", "=")
                found[key] = self.take("id")
                if self.peek() in (("punct", ","), ("punct", ";")):
                    self.at += 1
            self.take("punct", "]")
        return found

    def body(self, cluster: str | None) -> None:
        self.take("punct", "{")
        attributes = self.clusters.setdefault(cluster, {}) if cluster else {}
        while self.peek() != ("punct", "}"):
            first = self.take("id")
            if first == "subgraph":
                name = self.take("id")
                if cluster:
                    self.member_of[name] = cluster
                self.body(name)
            elif first in ("node", "edge", "graph"):
                self.attributes()
            elif self.peek() == ("punct", "="):
                self.take("punct", "=")
                attributes[first] = self.take("id")
            else:
                chain = [first]
                while self.peek() and self.peek()[0] == "arrow":  # type: ignore[index]
                    assert self.take("arrow") == "->", "a digraph's edges are ->"
                    chain.append(self.take("id"))
                found = self.attributes()
                if len(chain) == 1:
                    self.nodes.setdefault(first, {}).update(found)
                    if cluster:
                        self.member_of[first] = cluster
                else:
                    self.edges += [(a, b, found) for a, b in itertools.pairwise(chain)]
            if self.peek() == ("punct", ";"):
                self.take("punct", ";")
        self.take("punct", "}")


def read_dot(text: str) -> Drawn:
    parser = DotParser(text)
    parser.graph()
    drawn, names = Drawn(), {}
    for cluster, attributes in parser.clusters.items():
        assert cluster.startswith("cluster_")
        label = attributes["label"].split("\n")
        names[cluster] = label[0]
        drawn.boxes[label[0]] = label
    for node, attributes in parser.nodes.items():
        if attributes.get("style") == "invis":  # a component's anchor for its edges
            names[node] = names[parser.member_of[node]]
            continue
        label = attributes["label"].split("\n")
        names[node] = label[0]
        drawn.nodes[label[0]] = label
    for member, cluster in parser.member_of.items():
        if parser.nodes.get(member, {}).get("style") != "invis":
            drawn.parent[names[member]] = names[cluster]
    for source, target, attributes in parser.edges:
        assert source in parser.nodes, f"an edge from undeclared {source}"
        assert target in parser.nodes, f"an edge to undeclared {target}"
        for end, node in (("ltail", source), ("lhead", target)):
            if end in attributes:
                assert attributes[end] == parser.member_of[node]
        drawn.edges.add((names[source], names[target]))
    return drawn


# -- the tests ----------------------------------------------------------------------------------


def operations_plan() -> Plan:
    """A generated stack with alerts: a log metric and its alert policy share a name."""
    return cached_plan("operations")


@pytest.mark.parametrize("stack", ["dev", "prod", "operations"])
def test_mermaid_draws_each_resource_in_its_component_and_each_dependency(stack: str) -> None:
    plan = cached_plan(stack)
    drawn = read_mermaid(mermaid(plan))
    if stack == "operations":  # shared names: checked below, by position
        assert set(drawn.nodes) == {r.name for r in plan.custom_resources()}
        return
    same_shape(drawn, plan)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dot_parses_and_draws_each_resource_and_dependency(stack: str) -> None:
    plan = cached_plan(stack)
    text = dot(plan)
    parser = DotParser(text)
    assert parser.graph() == f"dicom-bq {stack}"
    same_shape(read_dot(text), plan)


def test_grants_and_waits_are_told_apart() -> None:
    plan = cached_plan("prod")
    text = mermaid(plan)
    drawn = read_mermaid(text)
    for resource in plan.custom_resources():
        if "role" in resource.inputs and "member" in resource.inputs:
            assert drawn.nodes[resource.name][-1] == resource.inputs["role"]
            assert re.search(r"n\d+\{\{\"" + re.escape(resource.name) + "<br/>", text)
        if resource.type == "time:index/sleep:Sleep":
            assert drawn.nodes[resource.name][-1] == f"wait {resource.inputs['createDuration']}"
    roles = {line[-1] for line in read_dot(dot(plan)).nodes.values()}
    assert {g["role"] for g in plan.grants} <= roles


def test_a_shared_name_is_drawn_to_the_earlier_resource() -> None:
    plan = operations_plan()
    names = [r.name for r in plan.resources]
    assert len(set(names)) < len(names), "the stack no longer shares a name: pick another"
    text = mermaid(plan)
    ids = {f"n{i}": r for i, r in enumerate(plan.resources)}
    for source, target in _EDGE.findall(text):
        dependent, dependency = ids[target], ids[source]
        assert dependency.name in dependent.depends_on
        assert int(source[1:]) < int(target[1:])
    edges = {(ids[s].name, ids[t].name) for s, t in _EDGE.findall(text)}
    assert edges == expected(plan).edges
    DotParser(dot(plan)).graph()


STRANGE = [
    'quote " and [brackets] {braces} (parens)',
    "hash #35; <br/> & <b>markup</b> `tick` ;semi|pipe",
    "back\\slash\\",
    "end",
    "subgraph",
    "ünïcode → δ",
    "line\nbreak",
]


def strange_plan() -> Plan:
    def resource(name: str, **extra: object) -> PlannedResource:
        values: dict[str, object] = {
            "type": "gcp:projects/iAMMember:IAMMember",
            "custom": True,
            "parent": STRANGE[0],
            "protect": False,
            "retain_on_delete": False,
            "depends_on": [],
            "inputs": {"role": 'roles/odd"role\\', "member": "user:x"},
        }
        values.update(extra)
        return PlannedResource(name=name, **values)  # type: ignore[arg-type]

    resources = [
        resource(STRANGE[0], type='dicom-bq:index:Odd"Component', custom=False, parent=None),
        *(
            resource(name, depends_on=STRANGE[1:index])
            for index, name in enumerate(STRANGE)
            if index
        ),
    ]
    # A dependency on a component: an arrow to its box.
    resources.append(resource("after-the-box", depends_on=[STRANGE[0]], parent=None))
    return Plan(stack='odd "stack" \\', resources=resources, outputs={})


def test_labels_with_quotes_and_markup_are_escaped_for_mermaid() -> None:
    plan = strange_plan()
    text = mermaid(plan)
    drawn = read_mermaid(text)
    for name in STRANGE[1:]:
        # A line break in a name is Mermaid's entity code, never a new line of the label.
        assert drawn.nodes[name][0] == name
        assert drawn.nodes[name][-1] == 'roles/odd"role\\'
    assert drawn.boxes[STRANGE[0]] == [STRANGE[0], 'Odd"Component']
    assert drawn.edges == expected(plan).edges
    assert drawn.parent == expected(plan).parent
    assert "<b>" not in text
    assert "line\nbreak" not in text


def test_labels_with_quotes_and_backslashes_are_escaped_for_dot() -> None:
    plan = strange_plan()
    text = dot(plan)
    parser = DotParser(text)
    assert parser.graph() == 'dicom-bq odd "stack" \\'
    drawn = read_dot(text)
    for name in STRANGE[1:]:
        if "\n" in name:  # a line break in a name is a line break of the label in DOT
            assert drawn.nodes[name.split("\n")[0]][:2] == name.split("\n")
            continue
        assert drawn.nodes[name][0] == name
        assert drawn.nodes[name][-1] == 'roles/odd"role\\'
    assert drawn.boxes[STRANGE[0]] == [STRANGE[0], 'Odd"Component']
    assert ("line", "after-the-box") not in drawn.edges
    assert (STRANGE[0], "after-the-box") in drawn.edges


def test_the_same_stack_draws_the_same_text() -> None:
    again = plan_example("prod")  # planned anew, not the cached plan
    assert mermaid(again) == mermaid(cached_plan("prod"))
    assert dot(again) == dot(cached_plan("prod"))


@functools.cache
def _plan_command(*options: str) -> tuple[str, str, int]:
    result = runner.invoke(app, ["plan", "--stack", "prod", "--project-dir", str(ROOT), *options])
    return result.stdout, result.stderr, result.exit_code


@pytest.mark.parametrize("output_format", ["mermaid", "dot"])
def test_the_plan_command_prints_the_graph_alone_on_stdout(output_format: str) -> None:
    stdout, stderr, code = _plan_command("--format", output_format, "--check")
    assert code == 0, stderr
    draw = mermaid if output_format == "mermaid" else dot
    assert stdout == draw(cached_plan("prod"))
    assert "Note:" in stderr
    assert "Note:" not in stdout


def readme_graph() -> str | None:
    text = README.read_text("utf-8")
    if BEGIN not in text or END not in text:
        return None
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    m = re.fullmatch(r"\s*```mermaid\n(.*?)```\s*", block, re.DOTALL)
    return m.group(1) if m else None


def test_the_readme_shows_the_prod_stack_as_the_command_draws_it() -> None:
    stdout, stderr, code = _plan_command("--format", "mermaid", "--check")
    assert code == 0, stderr
    assert readme_graph() == stdout, (
        f"README.md's graph of prod (between {BEGIN!r} and {END!r}) is not what "
        f"`dicom-bq plan --stack prod --format mermaid` draws: regenerate it with `{REGENERATE}`"
    )


def write_readme_graph() -> None:
    """Replace the README's graph of prod with what the command draws now."""
    text = README.read_text("utf-8")
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    stdout, stderr, code = _plan_command("--format", "mermaid")
    if code != 0:
        sys.exit(stderr)
    README.write_text(f"{head}{BEGIN}\n```mermaid\n{stdout}```\n{END}{tail}", "utf-8")
    print(f"wrote the prod graph into {README}")


if __name__ == "__main__":
    write_readme_graph()
