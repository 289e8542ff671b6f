"""The documentation: README.md, CHANGELOG.md and docs/ build with Sphinx (warnings as errors), every registered
optimizer has its generated page, the README's algorithm table is what the declarations generate, and every code
snippet runs.

Snippets, by the fence's language:

* ``python``: executed, the blocks of one file in order in one namespace, in a temporary working directory;
* ``toml`` preceded by ``<!-- file: NAME -->``: written to NAME in that directory, for the blocks after it (and
  checked by the loader of a command that names it); any other ``toml`` block is parsed;
* ``console``: each command is checked without running it: ``adamkit ...`` by the command's own argument parser
  (a suite file it names by the suite loader), ``python``/``torchrun`` of an example by the example's parser,
  ``make`` targets against the Makefile, ``pip install`` extras against pyproject.toml;
* ``text`` is output, not code; ``{directive}`` blocks are Sphinx's.

A block preceded by ``<!-- not run: REASON; covered by tests/FILE.py::TEST -->`` is not run (it needs a GPU, a
process group, a cluster); the test it names must exist.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest

import adamkit
from adamkit import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GENERATED = ("_build", "algorithms", "_generated")  # build outputs under docs/, not sources
README_LIMIT = 10 * 1024


def _generator():
    spec = importlib.util.spec_from_file_location("adamkit_docs", DOCS / "_ext" / "adamkit_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    pages = [p for p in sorted(DOCS.rglob("*.md")) if p.relative_to(DOCS).parts[0] not in GENERATED]
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *pages]


class Block(NamedTuple):
    path: Path
    line: int
    language: str
    text: str
    marker: str  # the HTML comment on the line before the fence, or ""


def blocks(path: Path) -> list[Block]:
    out, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        match = re.match(r"^(\s*)(```+)\s*(\S*)", lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.groups()
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = previous if previous.startswith("<!--") else ""
        start, i = i, i + 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        out.append(Block(path, start + 1, language, "\n".join(body) + "\n", marker))
        i += 1
    return out


def _where(block: Block) -> str:
    return f"{block.path.relative_to(ROOT)}:{block.line}"


def _not_run(block: Block) -> bool:
    return block.marker.startswith("<!-- not run:")


def _written_file(block: Block) -> str | None:
    match = re.match(r"<!-- file: (\S+) -->", block.marker)
    return match.group(1) if match else None


IDS = [str(p.relative_to(ROOT)) for p in markdown_files()]


# ------------------------------------------------------------------------------------------------ the build
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once by Sphinx with -W (warnings are errors) and -n (nitpicky: every reference resolves)."""
    pytest.importorskip("sphinx", reason="pip install 'adamkit[docs]'")
    pytest.importorskip("myst_parser", reason="pip install 'adamkit[docs]'")
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("site")
    log = out / "warnings.txt"
    with warnings.catch_warnings():  # MyST's use of Sphinx's deprecated API is theirs to mend, not a docs warning
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        status = build_main(["-W", "--keep-going", "-n", "-q", "-b", "html", "-d", str(out / "doctrees"),
                             "-w", str(log), str(DOCS), str(out / "html")])
    assert status == 0, "make docs fails:\n" + log.read_text()
    return out / "html"


def test_the_docs_build_with_warnings_as_errors(site):
    for page in ("index", "usage", "algorithms", "guarantees", "low-precision", "distributed", "performance",
                 "bench/index", "bench/suites", "bench/protocol", "bench/claims", "bench/tasks-and-data",
                 "bench/running", "bench/report", "adding-an-algorithm", "architecture", "api", "changelog",
                 "examples/index"):
        assert (site / f"{page}.html").is_file(), page
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in adamkit.__all__:
        assert f'id="adamkit.{name}"' in api, f"the API reference lacks adamkit.{name}"


def test_every_example_has_its_page(site):
    index = (site / "examples" / "index.html").read_text(encoding="utf-8")
    for example in sorted((ROOT / "examples").glob("*.py")):
        page = site / "examples" / f"{example.stem}.html"
        assert page.is_file(), f"examples/{example.name} has no page (docs/examples/{example.stem}.md)"
        assert f'href="{example.stem}.html"' in index
        assert "parse_args" in page.read_text(encoding="utf-8")  # the script itself is on its page


def test_every_registered_optimizer_has_its_generated_page(site):
    index = (site / "algorithms.html").read_text(encoding="utf-8")
    for name in adamkit.list_optimizers():
        cls = adamkit.get_optimizer_class(name)
        page = site / "algorithms" / f"{name}.html"
        assert page.is_file(), f"{cls.__name__} has no page"
        assert f'href="algorithms/{name}.html"' in index, f"the algorithm table does not lead to {name}'s page"
        text = page.read_text(encoding="utf-8")
        for argument, h in cls.hyperparameters.items():
            assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{argument}</span></code>" \
                   in text, (name, argument)
        for state in cls.state_formats:
            assert state in text, (name, state)
        assert cls.__name__ in text and f"adamkit.{cls.__name__}" in text


def test_a_new_declaration_gets_its_page_and_a_docstring_must_name_its_paper():
    from optim.test_adding_an_algorithm import ToyLion

    docs = _generator()
    page = docs.algorithm_page(ToyLion)
    assert page.startswith("# ToyLion\n\nLion (Chen et al. 2023), as a test of the declarations")
    for argument in ToyLion.hyperparameters:
        assert f"| `{argument}`" in page
    assert "| `exp_avg` | yes | signed" in page
    assert "no fused C kernel: the CPU default is the loop" in page
    assert "None declared (`bench = BenchSpec(...)`)" in page

    class Nameless(ToyLion):
        """A Lion without its citation."""

    with pytest.raises(ValueError, match="must read 'Name \\(authors, venue\\)"):
        docs.summary(Nameless)


# ------------------------------------------------------------------------------------------------ the README
def test_the_readme_is_the_front_door_and_its_table_is_what_the_declarations_generate():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= README_LIMIT, f"README.md is {readme.stat().st_size} bytes; the limit is 10 KB"
    docs = _generator()
    assert docs.committed_readme_block() == docs.readme_block(), (
        "README.md's algorithm table is stale: run `python docs/_ext/adamkit_docs.py --write`")
    for name in adamkit.list_optimizers():
        assert f"| `{name}` |" in docs.committed_readme_block()
    for link in re.findall(r"\]\(((?:docs/|results/|CHANGELOG)[^)#]*)", readme.read_text(encoding="utf-8")):
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


# ------------------------------------------------------------------------------------------------ the snippets
@pytest.mark.parametrize("path", markdown_files(), ids=IDS)
def test_every_python_snippet_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registered = set(adamkit.list_optimizers())
    namespace = {"__name__": "__snippet__"}
    try:
        for block in blocks(path):
            if _not_run(block):
                continue
            if block.language == "toml":
                tomllib.loads(block.text)
                if _written_file(block):
                    (tmp_path / _written_file(block)).write_text(block.text, encoding="utf-8")
            elif block.language == "python":
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(block.text, _where(block), "exec"), namespace)
    finally:  # an algorithm a page declared and registered leaves no trace for the tests after this one
        for name in set(adamkit.list_optimizers()) - registered:
            adamkit.registry.unregister(name)
        namespace.clear()
        gc.collect()


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _parses(parse, argv: list[str], what: str) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            parse(argv)
    except SystemExit as exit:
        assert exit.code in (0, None), f"{what}: {stderr.getvalue().strip()}"


def check_command(argv: list[str], written: dict[str, Path], where: str) -> None:
    while argv and re.match(r"^\w+=", argv[0]):  # VARIABLE=value before the command
        argv = argv[1:]
    if not argv:
        return
    program, args = argv[0], argv[1:]
    if program == "adamkit":
        _parses(cli.build_parser().parse_args, args, f"{where}: adamkit {' '.join(args)}")
        if args[:2] == ["bench", "run"] and len(args) > 2 and args[2] in written:
            from adamkit.bench.suite import load_suite

            load_suite(written[args[2]])
    elif program == "make":
        assert set(args) <= _makefile_targets(), f"{where}: no such make target in {args}"
    elif program in ("python", "python3", "torchrun"):
        scripts = [a for a in args if a.endswith(".py")]
        if program.startswith("python") and args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]) is not None, f"{where}: no module {args[1]}"
            return
        assert scripts, f"{where}: {program} of what?"
        script = ROOT / scripts[0]
        assert script.is_file(), f"{where}: no {scripts[0]}"
        sys.path.insert(0, str(script.parent))
        try:
            spec = importlib.util.spec_from_file_location(f"snippet_{script.stem}", script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(script.parent))
        _parses(module.parse_args, args[args.index(scripts[0]) + 1:], f"{where}: {' '.join(argv)}")
    elif program == "pip" and args[:1] == ["install"]:
        for requirement in args[1:]:
            match = re.search(r"\[([\w,]+)\]", requirement)
            if match and (requirement.startswith((".", "adamkit"))):
                assert set(match.group(1).split(",")) <= _extras(), f"{where}: no such extra in {requirement}"
    else:
        raise AssertionError(f"{where}: `{' '.join(argv)}` is not a command this test knows how to check; "
                             "mark its block <!-- not run: REASON; covered by tests/FILE.py::TEST -->")


@pytest.mark.parametrize("path", markdown_files(), ids=IDS)
def test_every_command_is_valid(path, tmp_path):
    written = {}
    for block in blocks(path):
        if _not_run(block):
            continue
        if block.language == "toml" and _written_file(block):
            written[_written_file(block)] = tmp_path / _written_file(block)
            written[_written_file(block)].write_text(block.text, encoding="utf-8")
        if block.language in ("console", "sh", "bash", "shell"):
            for offset, line in enumerate(block.text.splitlines(), start=1):
                check_command(shlex.split(line, comments=True), written, f"{_where(block)}+{offset}")


@pytest.mark.parametrize("path", markdown_files(), ids=IDS)
def test_every_snippet_is_run_or_names_the_test_that_covers_it(path):
    known = {"python", "toml", "console", "sh", "bash", "shell", "text"}
    for block in blocks(path):
        if block.language.startswith("{"):
            continue  # a Sphinx directive
        assert block.language in known, f"{_where(block)}: a fence of unknown language {block.language!r}"
        if _not_run(block):
            match = re.match(r"<!-- not run: .+; covered by (tests/\S+\.py)::(\w+) -->$", block.marker)
            assert match, f"{_where(block)}: a block not run must name the test that covers it"
            test_file, test = ROOT / match.group(1), match.group(2)
            assert test_file.is_file() and f"def {test}(" in test_file.read_text(), (
                f"{_where(block)}: {match.group(1)}::{test} does not exist")
