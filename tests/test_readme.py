"""The README and docs/ against the real command line, so that what they show stays true.

Every fenced block that opens with ``$ deepnet ... --help`` must be that command's real help
(at 100 columns); every ``deepnet COMMAND --option`` they name, in a shell block, a ``$ ``
line or an inline code span, must exist; every ``from deepnet import ...`` in a Python block
must import; every TOML example must be a valid search file; every relative link must lead
to a file; and the README stays short.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from deepnet.cli import main
from deepnet.search import SearchSpec

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = (README, *sorted((ROOT / "docs").glob("*.md")))
MAX_README_LINES = 260
COLUMNS = "100"  # the width the transcripts were taken at: COLUMNS=100 deepnet ... --help

FENCE = re.compile(r"^(`{3,})(.*)$")
HELP_PROMPT = re.compile(r"^\$ deepnet((?: [\w-]+)*) (?:--help|-h)$")
SHELL_INFOS = frozenset({"bash", "sh", "shell", "console"})
CODE_SPAN = re.compile(r"`([^`\n]+)`")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
MAKE_ARGS = re.compile(r"make (\w+) ARGS=\"([^\"]*)\"")
MAKE_RECIPE = re.compile(r"^(\w+): .*\n\t\$\(VENV\)/bin/deepnet ([\w-]+) \$\(ARGS\)$", re.M)
IMPORT = re.compile(r"^from (deepnet[\w.]*) import ([\w ,]+)$")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it opens, its info string, and its lines."""

    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Invocation:
    """A deepnet command line a document shows: the words after ``deepnet``."""

    where: str
    words: str

    @property
    def command(self) -> str | None:
        """The subcommand named, or None for an option of ``deepnet`` itself."""
        first = self.words.split()[0]
        return None if first.startswith("-") else first

    @property
    def options(self) -> list[str]:
        return OPTION.findall(self.words)


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, in order."""
    blocks: list[Block] = []
    opening: tuple[int, str, str] | None = None  # line, fence, info
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if opening is None and fence:
            opening, body = (number, fence.group(1), fence.group(2).strip()), []
        elif opening is not None and line.strip() == opening[1]:
            blocks.append(Block(path, opening[0], opening[2], tuple(body)))
            opening = None
        elif opening is not None:
            body.append(line)
    if opening is not None:
        pytest.fail(f"{path.relative_to(ROOT)}:{opening[0]}: the fenced block is never closed")
    return blocks


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of everything outside fenced blocks."""
    inside = {n for b in fenced_blocks(path) for n in range(b.line, b.line + len(b.lines) + 2)}
    lines = path.read_text().splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if n not in inside]


def help_blocks() -> list[Block]:
    return [b for path in DOCS for b in fenced_blocks(path) if help_args(b)]


def help_args(block: Block) -> list[str] | None:
    """The arguments of the ``$ deepnet ... --help`` a block opens with, if it does."""
    prompt = HELP_PROMPT.match(block.lines[0]) if block.lines else None
    return None if prompt is None else [*prompt.group(1).split(), "--help"]


def real_output(args: list[str]) -> str:
    """What ``COLUMNS=100 deepnet ARGS`` prints: click's own path, not CliRunner's, which
    fixes the width at 80."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setenv("COLUMNS", COLUMNS)
        code = main.main(args, prog_name="deepnet", standalone_mode=False)
    assert code == 0, f"deepnet {' '.join(args)} exited with {code}: {out.getvalue()}"
    return out.getvalue()


def make_targets() -> dict[str, str]:
    """The Makefile targets that pass ARGS to a deepnet command: {"run": "search", ...}."""
    return dict(MAKE_RECIPE.findall((ROOT / "Makefile").read_text()))


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command) of the shell lines a block holds, continuation lines joined."""
    if block.lines and block.lines[0].startswith("$ "):
        return [
            (block.line + i + 1, line[2:])
            for i, line in enumerate(block.lines)
            if line.startswith("$ ")
        ]
    if block.info not in SHELL_INFOS:
        return []
    commands: list[tuple[int, str]] = []
    start, parts = 0, []
    for i, line in enumerate(block.lines, block.line + 1):
        text = line.split(" #", 1)[0].strip()
        start = start if parts else i
        parts.append(text.removesuffix("\\").strip())
        if not text.endswith("\\"):
            commands.append((start, " ".join(p for p in parts if p)))
            parts = []
    return commands


def invocations(path: Path) -> list[Invocation]:
    """Every deepnet command line a document shows (shell blocks, $ lines, code spans)."""
    targets = make_targets()
    name = path.relative_to(ROOT)
    found: list[tuple[int, str]] = []
    for block in fenced_blocks(path):
        if not help_args(block):
            found += shell_commands(block)
    found += [(n, span) for n, line in prose(path) for span in CODE_SPAN.findall(line)]
    result = []
    for number, text in found:
        make = MAKE_ARGS.search(text)
        if make and make.group(1) in targets:
            text = f"deepnet {targets[make.group(1)]} {make.group(2)}"
        if text.startswith("deepnet "):
            result.append(Invocation(f"{name}:{number}", text.removeprefix("deepnet ")))
    return result


def option_mentions(path: Path) -> list[tuple[str, str]]:
    """(where, option) of the inline code spans that name a bare option, like `--n-iter`."""
    name = path.relative_to(ROOT)
    return [
        (f"{name}:{n}", OPTION.findall(span)[0])
        for n, line in prose(path)
        for span in CODE_SPAN.findall(line)
        if span.startswith("--")
    ]


def options_of(command: click.Command) -> set[str]:
    """Its options in every spelling, with the help option click adds to every command."""
    named = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    return named | set(main.context_settings["help_option_names"])


COMMANDS: dict[str, click.Command] = {n: c for n, c in main.commands.items() if not c.hidden}
ALL_OPTIONS = set().union(options_of(main), *(options_of(c) for c in COMMANDS.values()))


@pytest.mark.parametrize("block", help_blocks(), ids=lambda b: f"{b.where} {b.lines[0][2:]}")
def test_help_transcript_is_the_real_output(block: Block) -> None:
    args = help_args(block)
    assert args is not None
    real = real_output(args).rstrip("\n").splitlines()
    shown = [line.rstrip() for line in block.lines[1:]]
    assert shown == [line.rstrip() for line in real], (
        f"{block.where}: the transcript of `deepnet {' '.join(args)}` is stale; replace it "
        f"with the output of `COLUMNS={COLUMNS} deepnet {' '.join(args)}`"
    )


def test_readme_shows_the_top_level_help() -> None:
    shown = {tuple(help_args(b) or ()) for b in help_blocks() if b.path == README}
    assert ("--help",) in shown, "README.md must show the `$ deepnet --help` transcript"


def test_cli_doc_shows_every_commands_help() -> None:
    shown = {tuple(help_args(b) or ()) for b in help_blocks() if b.path.name == "cli.md"}
    missing = [name for name in COMMANDS if (name, "--help") not in shown]
    assert not missing, f"docs/cli.md lacks the `$ deepnet NAME --help` transcript of {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_and_option_named_exists(path: Path) -> None:
    stale = []
    for inv in invocations(path):
        command = main if inv.command is None else COMMANDS.get(inv.command)
        if command is None:
            stale.append(f"{inv.where}: `deepnet {inv.command}` is no command of {list(COMMANDS)}")
            continue
        known = options_of(command)
        stale += [
            f"{inv.where}: `deepnet {inv.words}`: {opt} is no option of `{command.name}`"
            for opt in inv.options
            if opt not in known
        ]
    stale += [
        f"{where}: `{opt}` is no option of any deepnet command"
        for where, opt in option_mentions(path)
        if opt not in ALL_OPTIONS
    ]
    assert not stale, "\n".join(stale)


def test_readme_names_every_command() -> None:
    named = {inv.command for inv in invocations(README)}
    missing = sorted(set(COMMANDS) - named)
    assert not missing, f"README.md's tour never shows `deepnet {missing[0]}`: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_imports_resolve(path: Path) -> None:
    missing = []
    for block in fenced_blocks(path):
        if block.info != "python":
            continue
        for line in block.lines:
            found = IMPORT.match(line)
            if found is None:
                continue
            module = importlib.import_module(found.group(1))
            names = [part.split(" as ")[0].strip() for part in found.group(2).split(",")]
            missing += [
                f"{block.where}: {found.group(1)}.{n}" for n in names if not hasattr(module, n)
            ]
    assert not missing, f"imports shown that do not exist: {missing}"


@pytest.mark.parametrize(
    "block",
    [b for path in DOCS for b in fenced_blocks(path) if b.info == "toml"],
    ids=lambda b: b.where,
)
def test_toml_examples_are_valid_search_files(block: Block) -> None:
    SearchSpec.from_mapping(tomllib.loads("\n".join(block.lines)), block.where)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = [
        f"{path.relative_to(ROOT)}:{n}: {target}"
        for n, line in prose(path)
        for target in LINK.findall(line)
        if "://" not in target and not (path.parent / target).exists()
    ]
    assert not broken, f"links to files that do not exist: {broken}"


def test_readme_links_every_doc() -> None:
    linked = {
        (README.parent / t).resolve() for _, line in prose(README) for t in LINK.findall(line)
    }
    unlinked = [p.name for p in DOCS[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md links none of {unlinked}"


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, over {MAX_README_LINES}: move reference material to docs/"
    )
