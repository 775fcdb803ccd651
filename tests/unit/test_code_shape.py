"""Shape rules for pipeline/, checked on the source (AST), not by running it.

- no function or method longer than 60 lines (def line to the last line of its body), unless a
  comment with ``long:`` and a reason sits on the def line or the line above it (or above its decorators);
- no Typer command body in pipeline/cli/ longer than 30 lines: a command parses options and calls one library function;
- nothing imports the old flat modules ``pipeline.stages`` / ``pipeline.runner`` (they moved to pipeline.workflow);
- benchmarks live in pipeline/bench: no other module defines a ``benchmark_*`` function.

Each failure lists every offender as ``path:line name (N lines)`` so one run shows all the work left.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"
MAX_FUNCTION_LINES = 60
MAX_COMMAND_BODY_LINES = 30
OLD_MODULES = ("pipeline.stages", "pipeline.runner")
# `# long: <why>` (a reason is required, not just the marker).
LONG_MARKER = re.compile(r"#.*\blong:\s*\S{3,}")

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def python_files(root: Path = PACKAGE) -> list[Path]:
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def functions(tree: ast.AST) -> Iterator[FunctionNode]:
    """Every function and method, nested ones included."""
    for node in ast.walk(tree):
        if isinstance(node, FunctionNode):
            yield node


def function_lines(node: FunctionNode) -> int:
    # From the `def` line (decorators not counted) to the last line of the body.
    return node.end_lineno - node.lineno + 1


def has_long_comment(node: FunctionNode, lines: list[str]) -> bool:
    """A `# long: why` comment on the def line, the line above it, or the line above its first decorator."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    candidates = {node.lineno, node.lineno - 1, first - 1}
    return any(1 <= n <= len(lines) and LONG_MARKER.search(lines[n - 1]) for n in candidates)


def is_typer_command(node: FunctionNode) -> bool:
    """Decorated with ``@app.command``/``@<something>_app.command``, called (``(...)``) or not."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "command"
            and isinstance(target.value, ast.Name)
            and (target.value.id == "app" or target.value.id.endswith("_app"))
        ):
            return True
    return False


def command_body_lines(node: FunctionNode) -> int:
    # The body proper: the signature (Typer options) and the docstring (the --help text) do not count.
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return node.end_lineno - body[0].lineno + 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import, relative ones resolved; ``from a import b`` yields a.b too."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def is_old_module(name: str) -> bool:
    return any(name == old or name.startswith(old + ".") for old in OLD_MODULES)


def report(title: str, offenders: list[str]) -> str:
    return f"{title} ({len(offenders)}):\n  " + "\n  ".join(offenders)


# ------------------------------------------------------------------ the rules
def test_no_function_longer_than_60_lines_without_a_reason():
    offenders = []
    for path in python_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in functions(parse(path)):
            length = function_lines(node)
            if length > MAX_FUNCTION_LINES and not has_long_comment(node, lines):
                offenders.append(f"{relative(path)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, report(f"functions over {MAX_FUNCTION_LINES} lines without a `# long: why` comment", offenders)


def test_no_cli_command_body_longer_than_30_lines():
    offenders = []
    commands = 0
    for path in python_files(PACKAGE / "cli"):
        for node in functions(parse(path)):
            if not is_typer_command(node):
                continue
            commands += 1
            length = command_body_lines(node)
            if length > MAX_COMMAND_BODY_LINES:
                offenders.append(f"{relative(path)}:{node.lineno} {node.name} ({length} lines)")
    assert commands >= 10, f"found only {commands} Typer commands in pipeline/cli: is the decorator check still right?"
    assert not offenders, report(f"CLI command bodies over {MAX_COMMAND_BODY_LINES} lines", offenders)


def test_nothing_imports_the_old_stages_or_runner_modules():
    offenders = []
    for path in python_files():
        tree = parse(path)
        for line, name in imported_modules(tree, path):
            if is_old_module(name):
                offenders.append(f"{relative(path)}:{line} imports {name}")
        # The stage table refers to stage functions by "module:function" strings.
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and is_old_module(node.value.split(":")[0]):
                offenders.append(f"{relative(path)}:{node.lineno} refers to {node.value!r}")
    assert not offenders, report("references to the old pipeline.stages / pipeline.runner modules", sorted(set(offenders)))


def test_benchmarks_live_in_pipeline_bench():
    offenders = []
    for path in python_files():
        if (PACKAGE / "bench") in path.parents:
            continue
        for node in functions(parse(path)):
            if node.name.startswith("benchmark_"):
                offenders.append(f"{relative(path)}:{node.lineno} {node.name} ({function_lines(node)} lines)")
    assert not offenders, report("benchmark_* functions outside pipeline/bench", offenders)


# ------------------------------------------------------------------ the checker itself
SAMPLE = '''
from . import stages
from ..workflow import runner as r
import pipeline.runner

def short():
    return 1

# long: one table of cases, splitting it would scatter them
@decorator
def excused():
{body}

def long_one():
{body}

@app.command("x")
def command(option: int = 1):
    """Help text."""
{cmd}

@bench_app.command
def other():
    pass
'''


def test_the_checker_measures_and_excuses_as_documented():
    source = SAMPLE.format(body="    x = 1\n" * 61, cmd="    y = 2\n" * 31)
    path = PACKAGE / "cli" / "sample.py"  # a path inside the package, for the relative-import resolution only
    tree = ast.parse(source)
    lines = source.splitlines()
    found = {node.name: node for node in functions(tree)}
    assert function_lines(found["short"]) == 2 and function_lines(found["long_one"]) == 62
    assert has_long_comment(found["excused"], lines) and not has_long_comment(found["long_one"], lines)
    assert not LONG_MARKER.search("# long:")  # the marker alone gives no reason
    assert is_typer_command(found["command"]) and is_typer_command(found["other"]) and not is_typer_command(found["short"])
    assert command_body_lines(found["command"]) == 31  # the docstring is not counted
    imported = {name for _, name in imported_modules(tree, path)}
    assert {"pipeline.cli.stages", "pipeline.workflow.runner", "pipeline.runner"} <= imported
    assert is_old_module("pipeline.runner") and is_old_module("pipeline.stages.x") and not is_old_module("pipeline.workflow.runner")
