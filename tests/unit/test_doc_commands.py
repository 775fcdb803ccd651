"""Every ``jpipe`` command the README and the documentation show still parses: its sub-command path exists
and every option it uses is an option of that command (checked on the Click tree Typer builds; nothing runs).

Commands are taken from ```bash / ```sh / ```shell blocks (every line; ```console: the ``$ `` lines) and from
inline `` `jpipe ...` `` code spans. Shell syntax is read with :mod:`shlex`: ``VAR=value`` prefixes, trailing
``\\`` continuations, pipes, ``&&`` / ``;`` and ``# comments`` are handled. Placeholders (``FILE``, ``[STAGE]``,
``...``, ``<path>``) are tolerated where a sub-command or an argument goes; options are never guessed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
INLINE_SPAN = re.compile(r"(?<!`)`(?!`)([^`\n]+)`(?!`)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")"}
REDIRECTS = {">", ">>", "<", "<<", ">&", "<&", "&>", "2>", "2>>"}
PREFIX_WORDS = {"time", "env", "nohup", "exec"}
HELP_OPTIONS = {"-h", "--help"}


@dataclass(frozen=True)
class DocCommand:
    """One ``jpipe`` command as a document shows it: where, the text, and the words after ``jpipe``."""

    where: str
    text: str
    args: tuple[str, ...]


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def split_words(text: str) -> list[str] | None:
    """Shell words (quotes removed, ``# comment`` dropped, operators as their own words); None if it is not shell."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: prose or a placeholder, not a command
        return None


def jpipe_segments(words: list[str]) -> list[tuple[str, ...]]:
    """The words after ``jpipe`` of each simple command that runs jpipe (env prefixes, redirects, pipes handled)."""
    segments, current = [], []
    for word in [*words, ";"]:
        if word in SHELL_OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    found = []
    for segment in segments:
        while segment and (ENV_ASSIGNMENT.match(segment[0]) or segment[0] in PREFIX_WORDS):
            segment = segment[1:]
        if segment and Path(segment[0]).name == "jpipe":
            found.append(tuple(_without_redirects(segment[1:])))
    return found


def _without_redirects(words: list[str]) -> list[str]:
    result, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in REDIRECTS or (word[:-1].isdigit() and word[-1:] in "<>"):
            skip = True  # the redirect's target follows
        else:
            result.append(word)
    return result


def _commands_in(text: str, where: str) -> list[DocCommand]:
    words = split_words(text)
    return [DocCommand(where, text.strip(), args) for args in jpipe_segments(words or [])]


def _block_lines(lines: list[str], language: str, indent: int) -> list[tuple[int, str]]:
    """``(offset, command text)`` of a shell block's lines: continuations joined, console output lines left out."""
    result, pending, start = [], "", 0
    for offset, raw in enumerate(lines):
        line = raw[indent:] if raw[:indent].isspace() else raw.lstrip()
        if not pending:
            start = offset
            if language == "console" and not line.lstrip().startswith("$ "):
                continue
            line = re.sub(r"^\s*\$ ", "", line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        result.append((start, pending + line))
        pending = ""
    if pending:
        result.append((start, pending))
    return result


def extract_commands(text: str, *, source: str) -> list[DocCommand]:
    """Every ``jpipe`` command of a Markdown text, each with ``source:line``."""
    lines, commands, index = text.splitlines(), [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            for span in INLINE_SPAN.findall(lines[index]):
                if re.match(r"^(\$ )?([A-Za-z_]\w*=\S* )*(\S*/)?jpipe(\s|$)", span):
                    commands += _commands_in(span.removeprefix("$ "), f"{source}:{index + 1}")
            index += 1
            continue
        indent, marker, language = len(fence.group(1)), fence.group(2), fence.group(3).lower()
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip().startswith(marker)), len(lines))
        if language in SHELL_LANGUAGES:
            for offset, command in _block_lines(lines[index + 1 : end], language, indent):
                commands += _commands_in(command, f"{source}:{index + 2 + offset}")
        index = end + 1
    return commands


def is_placeholder(word: str) -> bool:
    """``FILE``, ``[STAGE]``, ``<path>``, ``{a,b}``, ``...``, ``NAME...``: a stand-in, not a real word."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_.-]*|\[.*\]|<.*>|\{.*\}|\.\.\.|.*\.\.\.|…", word))


def _option_arity(command, name: str) -> int | None:
    """How many values option ``name`` of ``command`` takes (0 for a flag); None when there is no such option."""
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return 0 if getattr(param, "is_flag", False) or getattr(param, "count", False) else param.nargs
    return None


def _check_short_cluster(command, word: str) -> str | None:
    """``-fv`` (flags together) or ``-n5`` (a value attached): the first letter that is no option, else None."""
    for letter in word[1:]:
        arity = _option_arity(command, f"-{letter}")
        if arity is None:
            return f"-{letter}"
        if arity:
            return None  # the rest of the word is its value
    return None


def check_command(root, args: tuple[str, ...]) -> str | None:
    """None if ``jpipe ARGS`` parses as far as names go; else what is wrong (unknown sub-command or option)."""
    command, path, index = root, ["jpipe"], 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            return None
        if word.startswith("[-"):
            word = word.strip("[]")  # an optional option as a synopsis writes it: [--json], [--topn N]
        if word.startswith("-") and word != "-":
            name, has_value, _ = word.partition("=")
            if name in HELP_OPTIONS:
                return None
            arity = _option_arity(command, name)
            if arity is None and not name.startswith("--") and len(name) > 2:
                unknown = _check_short_cluster(command, name)
                arity = 0 if unknown is None else None
                name = unknown or name
            if arity is None:
                valid = sorted(opt for p in command.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts))
                return f"no option {name} for '{' '.join(path)}' (its options: {', '.join(valid)})"
            index += 0 if has_value else arity
        elif getattr(command, "commands", None) is not None:
            if is_placeholder(word):
                return None  # `jpipe COMMAND --help`: nothing more to check
            if word not in command.commands:
                return f"no command '{word}' in '{' '.join(path)}' (its commands: {', '.join(command.commands)})"
            command = command.commands[word]
            path.append(word)
    return None


def failures(commands: list[DocCommand]) -> list[str]:
    root = typer.main.get_command(app)
    found = []
    for command in commands:
        problem = check_command(root, command.args)
        if problem:
            found.append(f"{command.where}: `{command.text}`: {problem}")
    return found


def test_extracts_commands_from_blocks_spans_and_shell_syntax():
    text = (
        "Run `jpipe run tokenize --force` or see `jpipe.toml`.\n"
        "```bash\n"
        "KNBC_SOURCE=../shared/KNBC.tar.bz2 jpipe run \\\n"
        "    --jobs 2   # two at once\n"
        "cat reviews.txt | jpipe classify - --format csv > out.csv\n"
        "make run\n"
        "```\n"
        "```console\n"
        "$ jpipe status --json\n"
        "jpipe output line, not a command\n"
        "```\n"
        "```toml\n"
        "x = 'jpipe run --nope'\n"
        "```\n"
    )
    commands = extract_commands(text, source="f.md")
    assert [(c.where, c.args) for c in commands] == [
        ("f.md:1", ("run", "tokenize", "--force")),
        ("f.md:3", ("run", "--jobs", "2")),
        ("f.md:5", ("classify", "-", "--format", "csv")),
        ("f.md:9", ("status", "--json")),
    ]
    assert failures(commands) == []


def test_placeholders_and_group_options_are_accepted():
    text = (
        "`jpipe run [STAGE]`, `jpipe task add NAME ... --allow-rare`, `jpipe COMMAND --help`,\n"
        "`jpipe --profile quick -v run --set tokenize.split_mode=A`, `jpipe similar 京都 -n5`, `jpipe run -fn`,\n"
        "`jpipe analogy A B C [--topn N]`, `jpipe status [--json]`\n"
    )
    assert failures(extract_commands(text, source="f.md")) == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "```bash\njpipe classify reviews.txt --no-such-option x\n```\n",
            "f.md:2: `jpipe classify reviews.txt --no-such-option x`: no option --no-such-option for 'jpipe classify'",
        ),
        ("Try `jpipe frobnicate --json`.\n", "f.md:1: `jpipe frobnicate --json`: no command 'frobnicate' in 'jpipe'"),
        ("```sh\njpipe bench nosuch\n```\n", "no command 'nosuch' in 'jpipe bench'"),
        ("`jpipe run --profile quick`\n", "no option --profile for 'jpipe run'"),
        ("`jpipe run -fz`\n", "no option -z for 'jpipe run'"),
        ("`jpipe status [--nope]`\n", "no option --nope for 'jpipe status'"),
    ],
)
def test_checker_fails_on_a_made_up_option_or_command(snippet, expected):
    found = failures(extract_commands(snippet, source="f.md"))
    assert len(found) == 1 and expected in found[0], found


def test_documented_commands_parse():
    commands = [c for path in doc_files() for c in extract_commands(path.read_text(encoding="utf-8"), source=str(path.relative_to(REPO)))]
    assert commands, "no jpipe command found in the README and docs/"
    found = failures(commands)
    assert not found, f"{len(found)} documented command(s) do not parse:\n" + "\n".join(found)
