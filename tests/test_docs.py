"""The README and docs/*.md stay runnable: every `coulisse ...` command they show parses with the real CLI (its
commands and options exist, no usage error), and every link between them, and every section they (or the
changelog) cite by name, exists. Nothing here loads a model: the commands are parsed by click, never invoked."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from pathlib import Path

import click
import pytest

from coulisse.interfaces.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
SHELL = {"", "bash", "sh", "shell", "console"}
COMMANDS = set(cli.commands)


def _without_code(text: str) -> str:
    return FENCE.sub("", text)


def _pieces(line: str) -> list[str]:
    """The `coulisse` invocations of one shell line: the line cut at pipes and `&&`/`;`, a comment dropped,
    leading `VAR=value` assignments skipped."""
    found = []
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line.strip()):
        part = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", part)
        part = re.sub(r"\s+#.*$", "", part)
        if part.startswith("coulisse "):
            found.append(part)
    return found


def block_commands() -> list[tuple[str, str]]:
    """(file, command) for every `coulisse ...` line of the shell blocks, continuation lines joined."""
    found = []
    for path in DOCS:
        for lang, body in FENCE.findall(path.read_text(encoding="utf-8")):
            if lang in SHELL:
                for line in body.replace("\\\n", " ").splitlines():
                    found += [(path.name, piece) for piece in _pieces(line.removeprefix("$ "))]
    return found


def inline_commands() -> list[tuple[str, str]]:
    """(file, command) for every inline `coulisse COMMAND ...` span of the prose, as a reader copies it from the
    rendered page (a line break inside the span is a space there)."""
    found = []
    for path in DOCS:
        prose = _without_code(path.read_text(encoding="utf-8")).replace("\n", " ")
        for span in re.findall(r"`(coulisse [^`]+)`", prose):
            found += [(path.name, piece) for piece in _pieces(span) if piece.split()[1] in COMMANDS]
    return found


def parse(command: str) -> None:
    """Parse `command` with the CLI's own click objects; raise click's UsageError where a shell would fail."""
    args = [a for a in shlex.split(command)[1:] if a not in ("...", "…")]
    first = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))  # the group's own options
    ctx = cli.make_context("coulisse", args[:first + 1])
    name, *rest = args[first:]
    sub = cli.get_command(ctx, name)
    if sub is None:
        raise click.UsageError(f"no command {name!r}")
    sub.make_context(name, rest, parent=ctx)


def _parse_or_exit(command: str) -> None:
    with contextlib.suppress(click.exceptions.Exit):  # --help, --version
        parse(command)


def test_the_docs_show_commands():
    assert len(block_commands()) > 25 and len(inline_commands()) > 40


@pytest.mark.parametrize(("where", "command"), block_commands())
def test_every_command_of_a_shell_block_parses(where, command, monkeypatch, capsys):
    for name in [v for v in os.environ if v.startswith("COULISSE_")]:
        monkeypatch.delenv(name)
    try:
        _parse_or_exit(command)
    except click.UsageError as e:
        pytest.fail(f"{where}: `{command}` fails to parse: {e.format_message()}")


@pytest.mark.parametrize(("where", "command"), inline_commands())
def test_every_inline_command_names_real_options(where, command, monkeypatch, capsys):
    """Prose quotes fragments (`coulisse classify -i`), so a missing argument or value is fine; an option or
    argument the command does not take is not."""
    for name in [v for v in os.environ if v.startswith("COULISSE_")]:
        monkeypatch.delenv(name)
    try:
        _parse_or_exit(command)
    except click.MissingParameter:
        pass
    except click.BadOptionUsage as e:
        if "requires an argument" not in e.format_message():
            pytest.fail(f"{where}: `{command}`: {e.format_message()}")
    except click.UsageError as e:
        pytest.fail(f"{where}: `{command}`: {e.format_message()}")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> list[str]:
    return re.findall(r"^#+\s+(.*?)\s*$", _without_code(path.read_text(encoding="utf-8")), re.M)


def links() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(path.read_text(encoding="utf-8"))):
            if not re.match(r"[a-z]+:", target):
                found.append((str(path.relative_to(ROOT)), target))
    return found


@pytest.mark.parametrize(("where", "target"), links())
def test_every_relative_link_and_anchor_resolves(where, target):
    file, _, anchor = target.partition("#")
    path = (ROOT / where).parent / file if file else ROOT / where
    assert path.exists(), f"{where} links to {target}: no such file"
    if anchor:
        assert anchor in {_slug(h) for h in _headings(path)}, f"{where} links to {target}: no such heading"


def cited_sections() -> list[tuple[str, str, str]]:
    """(file, cited doc, section) for prose such as `(docs/jobs.md, "Evaluate against labels")`, in the docs and
    the changelog."""
    found = []
    for path in [*DOCS, ROOT / "CHANGELOG.md"]:
        prose = _without_code(path.read_text(encoding="utf-8")).replace("\n", " ")
        for doc, section in re.findall(r"([\w-]+\.md)\)?`?,\s+\"([^\"]+)\"", prose):
            found.append((path.name, doc, " ".join(section.split())))
    return found


@pytest.mark.parametrize(("where", "doc", "section"), cited_sections())
def test_every_section_cited_by_name_exists(where, doc, section):
    """A heading that holds the name as whole words (`session 21` in `Intel Xeon with AMX: session 21 (...)`), or
    a bold item (`- **Added columns**: ...`) of that doc."""
    path = ROOT / "docs" / doc
    assert path.exists(), f"{where} cites {doc}: no such file in docs/"
    words = rf"(?<!\w){re.escape(section)}(?!\w)"
    named = [h for h in _headings(path) if re.search(words, h, re.I)]
    named += re.findall(rf"\*\*{re.escape(section)}\*\*", path.read_text(encoding="utf-8"))
    assert named, f"{where} cites {doc}, \"{section}\": no heading or bold item of that name"


def test_the_refusals_jobs_md_quotes_are_the_ones_a_resume_prints():
    """docs/jobs.md quotes what `--resume` says when `--fast` resolves to another precision, and when an input
    given under another path holds other bytes."""
    from coulisse.interfaces.jobs.state import ResumeMismatchError, check_input, check_precision

    prose = " ".join((ROOT / "docs" / "jobs.md").read_text(encoding="utf-8").split())
    # The quote holds backticks (`coulisse info`), so the docs fence it with two.
    other = re.search(r"resolves to another mode, the resume is refused: ``(.+?)``", prose)
    assert other, "docs/jobs.md no longer quotes the refusal of a resume whose --fast resolves to another precision"
    with pytest.raises(ResumeMismatchError) as e:
        check_precision({"quantization": "int8"}, {"dtype": "float32"}, True, "out.csv")
    assert other.group(1) in str(e.value)
    moved = re.search(r"other bytes are refused naming both paths \(`(.+?) \.\.\.`\)", prose)
    assert moved, "docs/jobs.md no longer quotes the refusal of a moved input with other bytes"
    with pytest.raises(ResumeMismatchError) as e:
        check_input({"bytes": 9, "sha256": "a" * 64}, {"bytes": 9, "sha256": "b" * 64}, 4096, "out.csv",
                    ("/data/in.csv", "/data/other.csv"))
    assert moved.group(1) in str(e.value)


# Flags of other programs that the prose quotes alone: chromium's (README's screenshot), pytest-xdist's.
FOREIGN_FLAGS = {"--no-sandbox", "--dist"}


def _all_options() -> set[str]:
    found = {"--help", "--version"}
    for command in [cli, *cli.commands.values()]:
        for param in command.params:
            found.update(getattr(param, "opts", []) + getattr(param, "secondary_opts", []))
    return found


def prose_flags() -> list[tuple[str, str, str]]:
    """(file, flag, inline span) for each `--flag` the prose quotes: in a span that is a `coulisse` command, a
    command of it (`explain --html`) or flags alone (but in benchmarks.md); in a `python bench/X.py ...` span,
    X's flags."""
    found = []
    for path in DOCS:
        prose = _without_code(path.read_text(encoding="utf-8")).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            script = re.search(r"([\w-]+\.py)\b", span)
            first = span.split()[0]
            if script:
                if (ROOT / "bench" / script.group(1)).exists():
                    flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span[script.end():])
                    found += [(path.name, flag, span) for flag in flags]
            elif path.name == "benchmarks.md" and first != "coulisse":
                continue  # a session log: its flags alone are those of the script it is running
            elif first in {"coulisse", *COMMANDS} or first.startswith("-") or re.match(r"[A-Z_]+=", first):
                found += [(path.name, flag, span) for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span)]
    return found


def test_every_flag_the_prose_quotes_exists():
    """A renamed option leaves no stale `--old-name` in the docs: each quoted flag is an option of a coulisse
    command, or of the bench script the span runs."""
    options = _all_options() | FOREIGN_FLAGS
    stale = []
    for where, flag, span in prose_flags():
        script = re.search(r"([\w-]+\.py)\b", span)
        if script:
            source = (ROOT / "bench" / script.group(1)).read_text(encoding="utf-8")
            known = f'"{flag}"' in source or f"'{flag}'" in source
        else:
            known = flag in options
        if not known:
            stale.append(f"{where}: {flag} in `{span}`")
    assert len(prose_flags()) > 100
    assert not stale, "\n".join(stale)


def _defines(path: Path, name: str) -> bool:
    """Whether the module at `path` defines `name` at its top level (a def, a class, an assignment); a module
    that only imports it is not where it lives."""
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def named_definitions() -> list[tuple[str, str, str]]:
    """(file, module path, name) for the prose's "`tasks/__init__.py`'s `TASKS`" and "`explain.STAGES`"."""
    found = []
    for path in DOCS:
        prose = _without_code(path.read_text(encoding="utf-8")).replace("\n", " ")
        found += [(path.name, f, n) for f, n in re.findall(r"`([\w/]+\.py)`'s `(\w+)", prose)]
        found += [(path.name, f"{m}.py", n) for m, n in re.findall(r"`([a-z_]+)\.([A-Z][A-Z_]+)`", prose)]
    return found


@pytest.mark.parametrize(("where", "module", "name"), named_definitions())
def test_every_name_the_docs_place_in_a_module_is_there(where, module, name):
    src = ROOT / "src" / "coulisse"
    candidates = [src / module] if "/" in module else list(src.rglob(module))
    assert any(p.exists() and _defines(p, name) for p in candidates), f"{where}: {module} does not define {name}"
