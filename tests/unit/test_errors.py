"""Coded errors, checked on the source of pipeline/ (AST) and through the CLI.

- every ``SomeError("Exxx", ...)`` names a code listed in ``errors.CODES`` with the class's prefix;
- no error is raised without a code (the transitional ``PipelineError("message")`` form);
- no hint names a command-line flag: library errors reach Python API and HTTP users too;
- the CLI prints ``Error E1xx: ...`` for a bad ``--set``.

Failures list every offender as ``path:line`` so that one run shows all the work left.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import CODES, ConfigError, InputError, ModelError, PipelineError, WorkflowError, code_table

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"
CODE = re.compile(r"^E\d{3}$")
FLAG = re.compile(r"--[a-z]")
# Error class -> code prefix ("E" for the base class, which takes any kind).
BASE_PREFIXES = {"PipelineError": "E", "ConfigError": "E1", "InputError": "E2", "ModelError": "E3", "WorkflowError": "E4"}


@dataclass
class ErrorCall:
    where: str  # path:line
    cls: str
    prefix: str
    node: ast.Call
    custom_init: bool  # a subclass with its own __init__ (it passes the code to super().__init__ itself)
    constants: dict[str, list[str]]  # the module's NAME = "string" constants, to resolve hint=NAME


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _error_classes(trees: list[tuple[str, ast.Module]]) -> dict[str, tuple[str, bool]]:
    """Class name -> (prefix, defines __init__), for the base classes and their subclasses anywhere in pipeline/."""
    classes = {name: (prefix, False) for name, prefix in BASE_PREFIXES.items()}
    changed = True
    while changed:  # subclasses of subclasses
        changed = False
        for _, tree in trees:
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef) or node.name in classes:
                    continue
                prefixes = [classes[base][0] for base in map(_name, node.bases) if base in classes]
                if prefixes:
                    custom_init = any(isinstance(item, ast.FunctionDef) and item.name == "__init__" for item in node.body)
                    classes[node.name] = (max(prefixes, key=len), custom_init)
                    changed = True
    return classes


def error_calls() -> list[ErrorCall]:
    trees = list(_sources())
    classes = _error_classes(trees)
    calls = []
    for path, tree in trees:
        constants = {
            target.id: _strings(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in classes:
                prefix, custom_init = classes[_name(node.func)]
                calls.append(ErrorCall(f"{path}:{node.lineno}", _name(node.func), prefix, node, custom_init, constants))
    return calls


def _code_of(call: ErrorCall) -> str | None:
    first = call.node.args[0] if call.node.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and CODE.match(first.value):
        return first.value
    return None


def _report(title: str, offenders: list[str]) -> str:
    return f"{title} ({len(offenders)}):\n    " + "\n    ".join(offenders)


def test_the_scan_finds_the_error_calls():
    calls = error_calls()
    assert len(calls) > 50, len(calls)
    assert {"ConfigError", "InputError", "ModelError", "WorkflowError", "OutOfVocabulary"} <= {call.cls for call in calls}


def test_every_code_is_listed_and_matches_its_class():
    offenders = []
    for call in error_calls():
        code = _code_of(call)
        if code is None:
            continue
        if code not in CODES:
            offenders.append(f"{call.where} {call.cls}({code!r}): not in errors.CODES")
        elif not code.startswith(call.prefix):
            offenders.append(f"{call.where} {call.cls}({code!r}): a {call.cls} code starts with {call.prefix}")
    assert not offenders, _report("error codes not listed or of another kind", offenders)


def test_subclasses_with_their_own_init_pass_a_valid_code():
    offenders = []
    for path, tree in _sources():
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            for init in (item for item in cls.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"):
                supers = [n for n in ast.walk(init) if isinstance(n, ast.Call) and _name(n.func) == "__init__" and n.args]
                codes = [n.args[0].value for n in supers if isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)]
                bases = {_name(base) for base in cls.bases}
                if bases & set(BASE_PREFIXES) - {"PipelineError"} and not all(code in CODES for code in codes):
                    offenders.append(f"{path}:{init.lineno} {cls.name}.__init__ passes {codes}")
    assert not offenders, _report("subclass __init__ without a listed code", offenders)


def test_no_error_without_a_code():
    # Expected to fail until every owner has converted their raises: the list says where.
    offenders = []
    for call in error_calls():
        if call.custom_init or _code_of(call):
            continue
        positional = call.node.args
        # A code passed on through a variable (two positional arguments) cannot be checked here, but is a code.
        if len(positional) >= 2 and not isinstance(positional[0], ast.Constant):
            continue
        offenders.append(f"{call.where} {call.cls}(...) without a code")
    assert not offenders, _report("errors raised without a code", offenders)


def test_no_hint_names_a_command_line_flag():
    offenders = []
    for call in error_calls():
        for keyword in call.node.keywords:
            if keyword.arg != "hint":
                continue
            texts = _strings(keyword.value)
            if isinstance(keyword.value, ast.Name):
                texts += call.constants.get(keyword.value.id, [])
            flags = sorted({match for text in texts for match in FLAG.findall(text)})
            if flags:
                offenders.append(f"{call.where} {call.cls} hint names {', '.join(flags)}")
    assert not offenders, _report("hints that name command-line flags (name config keys or commands instead)", offenders)


def test_codes_table_is_well_formed():
    assert all(CODE.match(code) and code[1] in "1234" and summary.endswith(".") for code, summary in CODES.items())
    assert code_table().count("\n") == len(CODES) + 1
    for cls, prefix in ((ConfigError, "E1"), (InputError, "E2"), (ModelError, "E3"), (WorkflowError, "E4")):
        with pytest.raises(ValueError, match=f"under {prefix}xx"):
            cls("E999", "x")
    error = InputError("E208", "'x' is not in the word2vec vocabulary.", hint="Try another form.")
    assert str(error) == "E208: 'x' is not in the word2vec vocabulary.\nTry another form."
    assert error.to_json() == {
        "code": "E208",
        "kind": "input",
        "message": "'x' is not in the word2vec vocabulary.",
        "hint": "Try another form.",
    }
    assert isinstance(error, PipelineError) and isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("tokenize.split_mode=Q", "Error E104: tokenize.split_mode = 'Q' is not allowed.\nValid values: 'A', 'B', 'C'."),
        ("tokenize.split_mod=A", "Error E102: Unknown config key 'tokenize.split_mod'. Did you mean 'split_mode'?"),
    ],
)
def test_cli_prints_the_code_of_a_bad_override(tmp_path, override, expected):
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "--dir", str(tmp_path), "status", "--set", override],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},  # rich wraps at 80 columns without a terminal
    )
    assert completed.returncode == 1
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_documented_error_table_is_the_code_table():
    """The docs' error table is `code_table()` verbatim (the generated reference page), so a new or reworded code
    reaches the docs; no page keeps a hand copy that could fall behind `CODES`, and the pages link to the reference."""
    from pipeline.cli.reference import errors_reference_markdown

    assert code_table() in errors_reference_markdown()
    header = code_table().splitlines()[0]
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    copies = [page.relative_to(REPO) for page in pages if header in page.read_text(encoding="utf-8")]
    assert not copies, f"hand-copied error tables in {copies}: link to reference/errors.md instead"
    for page in ("development.md", "project.md"):
        assert "(reference/errors.md)" in (REPO / "docs" / page).read_text(encoding="utf-8"), page
