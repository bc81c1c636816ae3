"""The documentation site's machinery: the built-site check, the generated command-line page, the docstring
examples, offline math, the API pages' coverage of the public packages, and the citation files.

None of these tests builds the site (``mkdocs build --strict`` does, after pytest, in ``make test``): each
checks one hook of ``docs/hooks/`` on small inputs against what it must find.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import contextlib
import doctest
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import griffe
import pytest
import yaml
from mkdocs.config import load_config
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

import metasparse

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"


def load_hook(name: str) -> ModuleType:
    """Import ``docs/hooks/<name>.py`` (the hooks are files named in mkdocs.yml, not a package)."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


site_check = load_hook("site_check")
cli_reference = load_hook("cli_reference")
griffe_examples = load_hook("griffe_examples")
api_modules = load_hook("api_modules")
offline_math = load_hook("offline_math")


def mkdocs_config() -> MkDocsConfig:
    """mkdocs.yml as MkDocs reads and validates it."""
    return load_config(str(ROOT / "mkdocs.yml"))


# ---------------------------------------------------------------------------------------------------------
# the built-site check


def write_site(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


CLEAN_PAGE = """<!doctype html><html><head>
<link rel="stylesheet" href="../assets/site.css"><link rel="icon" href="/assets/icon.png">
<script src="../assets/app.js"></script></head><body>
<h1 id="title">Title</h1><a name="legacy"></a>
<a href="#title">here</a> <a href="#legacy">old anchor</a> <a href="../">home</a>
<a href="../other/#part">other page</a> <a href="../other/index.html#part">same, by file</a>
<a href="https://arxiv.org/abs/1904.03758">a reference to another site</a> <a href="mailto:a@b.c">mail</a>
<img src="data:image/png;base64,AAAA" alt="inline">
<img srcset="../assets/icon.png 1x, ../assets/icon.png 2x">
<div style="background: url('../assets/icon.png')"></div>
</body></html>"""


def clean_site(root: Path) -> Path:
    return write_site(root, {
        "index.html": '<a href="page/">page</a><a href="other/#part">part</a>',
        "page/index.html": CLEAN_PAGE,
        "other/index.html": '<h2 id="part">Part</h2><a href="../page/#title">back</a>',
        "assets/site.css": '@font-face { src: url("fonts/a.woff2") } a { background: url(#g) }',
        "assets/fonts/a.woff2": "",
        "assets/app.js": "",
        "assets/icon.png": "",
    })


def test_site_check_accepts_a_site_whose_assets_and_links_are_all_local(tmp_path):
    assert site_check.check_site(clean_site(tmp_path)) == []


def test_site_check_reports_each_planted_remote_asset_broken_link_and_mangled_example(tmp_path):
    site = clean_site(tmp_path)
    write_site(site, {
        "planted/index.html": """<html><head>
<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">
<link rel="preload" href="//cdn.example.org/x.woff2">
<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>
<style>@import "http://cdn.example.org/a.css";</style></head><body>
<img src="https://example.org/a.png"> <img srcset="../assets/icon.png 1x, https://example.org/b.png 2x">
<div style="background-image: url(https://example.org/c.png)"></div>
<a href="../other/#missing-part">bad anchor</a> <a href="../nowhere/">bad page</a>
<a href="#nope">bad self</a>
<script src="../assets/missing.js"></script>
<blockquote><blockquote><blockquote><p>add(1, 2)</p></blockquote></blockquote></blockquote>
<p>&gt;&gt;&gt; add(2, 3)</p> <pre><code>&gt;&gt;&gt; add(3, 4)</code></pre> <blockquote>a quote</blockquote>
</body></html>""",
        "assets/planted.css":
            '@import url("https://fonts.example.org/f.css"); b { background: url(gone.png) }',
    })
    assert sorted(site_check.check_site(site)) == sorted([
        "assets/planted.css: remote asset 'https://fonts.example.org/f.css'",
        "assets/planted.css: broken asset 'gone.png' (no file assets/gone.png)",
        "planted/index.html: remote asset 'https://fonts.googleapis.com/css?family=Roboto'",
        "planted/index.html: remote asset '//cdn.example.org/x.woff2'",
        "planted/index.html: remote asset 'https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js'",
        "planted/index.html: remote asset 'http://cdn.example.org/a.css'",
        "planted/index.html: remote asset 'https://example.org/a.png'",
        "planted/index.html: remote asset 'https://example.org/b.png'",
        "planted/index.html: remote asset 'https://example.org/c.png'",
        "planted/index.html: broken link '../other/#missing-part' (no id 'missing-part' in other/index.html)",
        "planted/index.html: broken link '../nowhere/' (no file nowhere/index.html)",
        "planted/index.html: broken link '#nope' (no id 'nope' in planted/index.html)",
        "planted/index.html: broken asset '../assets/missing.js' (no file assets/missing.js)",
        "planted/index.html: example rendered as text ('nested <blockquote>')",
        "planted/index.html: example rendered as text ('>>> add(2, 3)')",
    ])


def test_site_check_fails_the_build_only_when_it_finds_a_problem(tmp_path):
    site = clean_site(tmp_path)
    site_check.on_post_build(SimpleNamespace(site_dir=str(site)))
    write_site(site, {"index.html": '<script src="https://cdn.example.org/x.js"></script>'})
    with pytest.raises(PluginError, match=r"1 problem\(s\):\n  index.html: remote asset"):
        site_check.on_post_build(SimpleNamespace(site_dir=str(site)))


def test_site_check_runs_after_every_build():
    assert "docs/hooks/site_check.py" in mkdocs_config()["hooks"]


# ---------------------------------------------------------------------------------------------------------
# the command-line page


def help_output(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """What ``prog ARGV --help`` prints (argparse exits after printing it)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        parser.parse_args([*argv, "--help"])
    return printed.getvalue().rstrip()


def test_cli_page_has_every_command_and_subcommand_with_its_exact_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", str(cli_reference.HELP_WIDTH))
    parser = argparse.ArgumentParser(prog="tool", description="The tool.")
    commands = parser.add_subparsers(metavar="COMMAND")
    fit = commands.add_parser("fit", help="fit a model (%(prog)s)")
    fit.add_argument("--steps", type=int, default=10, help="number of steps (default: %(default)s)")
    grid = commands.add_parser("grid", help="grid searches", aliases=["g"]).add_subparsers()
    grid.add_parser("lasso", help="over lambda").add_argument("values", nargs="+")
    commands.add_parser("internal", help=argparse.SUPPRESS)
    page = cli_reference.cli_reference(parser)

    headings = {(): "## `tool` {#tool}", ("fit",): "### `tool fit` {#tool-fit}",
                ("grid",): "### `tool grid` {#tool-grid}",
                ("grid", "lasso"): "#### `tool grid lasso` {#tool-grid-lasso}"}
    for argv, heading in headings.items():
        assert heading in page
        assert f"```text\n{help_output(parser, list(argv))}\n```" in page
    assert "fit a model (tool)" in help_output(parser, [])  # in a one-line help, %(prog)s is the parent
    assert "| [`tool fit`](#tool-fit) | fit a model (tool) |" in page
    assert "| [`tool grid lasso`](#tool-grid-lasso) | over lambda |" in page
    assert "number of steps (default: 10)" in page
    assert page.count("### `tool grid`") == 1 and "tool g`" not in page  # an alias is not a second command
    assert "tool internal" not in page  # no section nor row (the parent's --help text is copied as is)


def test_cli_page_of_metasparse_matches_its_help(monkeypatch):
    from metasparse.cli import build_parser

    monkeypatch.setenv("COLUMNS", str(cli_reference.HELP_WIDTH))
    parser = build_parser()
    page = cli_reference.cli_reference(parser)
    top_help = help_output(parser, [])
    commands = re.findall(r"^    (\w+)", top_help.split("positional arguments:")[1], flags=re.MULTILINE)
    assert {"info", "demo", "synthetic", "bench"} <= set(commands)
    for command in commands:
        assert f"```text\n{help_output(build_parser(), [command])}\n```" in page, command


def test_cli_page_keeps_its_marker():
    assert cli_reference.MARKER in (ROOT / "docs" / cli_reference.PAGE).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# docstring examples


def test_example_sections_are_parsed_as_doctests_with_their_flags_trimmed(tmp_path):
    (tmp_path / "sample.py").write_text('''
def add(a: int, b: int) -> int:
    """Add two numbers.

    Example:
        >>> add(1, 2)  # doctest: +SKIP
        3
        >>> for n in range(2):
        ...     add(n, n)
        0
        2
    """
    return a + b
''', encoding="utf-8")
    extensions = griffe.load_extensions(griffe_examples.ExampleSections)
    module = griffe.load("sample", search_paths=[str(tmp_path)], extensions=extensions)
    sections = module["add"].docstring.parse("google", trim_doctest_flags=True)
    assert [section.kind.value for section in sections] == ["text", "examples"]
    assert sections[1].value == [(griffe.DocstringSectionKind.examples, ">>> add(1, 2)\n3\n"
                                  ">>> for n in range(2):\n...     add(n, n)\n0\n2")]
    without_extension = griffe.load("sample", search_paths=[str(tmp_path)])
    assert [section.kind.value for section in without_extension["add"].docstring.parse("google")] == [
        "text", "admonition"]  # what the extension is for: without it, Markdown gets the >>> lines


def test_the_api_reference_uses_the_example_extension_and_the_public_filter():
    options = mkdocs_config()["plugins"]["mkdocstrings"].config["handlers"]["python"]["options"]
    assert "docs/hooks/griffe_examples.py:ExampleSections" in options["extensions"]
    assert options["filters"] == "public"


# ---------------------------------------------------------------------------------------------------------
# offline math


def test_mathjax_comes_from_the_installed_package_with_its_fonts():
    release = offline_math.mathjax_release()
    files = {path.as_posix() for path in offline_math.release_files(release)}
    assert offline_math.BUNDLE in files
    assert any(name.startswith("output/chtml/fonts/woff-v2/") and name.endswith(".woff") for name in files)
    assert any(name.startswith("input/tex/extensions/") for name in files)  # what \require and autoload fetch
    assert "tex-svg.js" not in files  # the other bundles are not copied
    scripts = [str(script) for script in mkdocs_config()["extra_javascript"]]
    # the settings (window.MathJax) must be defined before the bundle reads them
    bundle = f"{offline_math.SITE_FOLDER}/{offline_math.BUNDLE}"
    assert scripts.index("javascripts/mathjax.js") < scripts.index(bundle)


def test_no_remote_script_stylesheet_or_font_is_configured():
    config = mkdocs_config()
    assert config["theme"]["font"] is False  # Material loads Google Fonts otherwise
    for asset in [*config["extra_javascript"], *config["extra_css"]]:
        assert not site_check.is_remote(str(asset)), asset


# ---------------------------------------------------------------------------------------------------------
# the API reference covers the public packages


def declares_all(path: Path) -> bool:
    """Whether the module file assigns ``__all__`` (read, not imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Assign | ast.AnnAssign) and "__all__" in ast.unparse(node).split("=")[0]
               for node in tree.body)


def public_modules() -> list[tuple[str, list[str]]]:
    """``(subpackage, [its modules that declare __all__])`` for each subpackage of metasparse that needs a
    page: one declaring ``__all__`` (its page lists those names) or, for one that does not (a namespace of
    studies), one with such modules (its page lists them: ``show_submodules``)."""
    found = []
    for init in sorted((ROOT / "metasparse").glob("*/__init__.py")):
        package = f"metasparse.{init.parent.name}"
        modules = [f"{package}.{module.stem}" for module in sorted(init.parent.glob("[!_]*.py"))
                   if declares_all(module)]
        if declares_all(init) or modules:
            found.append((package, [] if declares_all(init) else modules))
    return found


def api_directives() -> dict[str, str]:
    """``{object: its options' text}`` of every ``::: object`` directive of the API pages in the nav."""
    api_nav = next(item["API reference"] for item in mkdocs_config()["nav"] if "API reference" in item)
    directives = {}
    for page in [page for entry in api_nav for page in entry.values()]:
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        for name, options in re.findall(r"^::: ([\w.]+)\n((?:[ ]{4}.*\n)*)", text, flags=re.MULTILINE):
            directives[name] = options
    return directives


def test_api_pages_of_packages_end_with_the_docstrings_of_their_explained_modules(tmp_path):
    package = tmp_path / "metasparse" / "toy"
    write_site(package, {"__init__.py": '"""Toy."""\n__all__ = []\n',
                         "explained.py": '"""Summary.\n\nHow it works, at length."""\n',
                         "terse.py": '"""Only a summary."""\n', "_private.py": '"""Private.\n\nMore."""\n'})
    config = SimpleNamespace(config_file_path=str(tmp_path / "mkdocs.yml"))
    page = SimpleNamespace(file=SimpleNamespace(src_uri="api/toy.md"))
    markdown = api_modules.on_page_markdown("# toy\n\n::: metasparse.toy\n", page, config, None)
    assert markdown.startswith("# toy\n\n::: metasparse.toy\n\n\n## Modules\n")
    directives = re.findall(r"^::: ([\w.]+)", markdown, flags=re.MULTILINE)
    assert directives == ["metasparse.toy", "metasparse.toy.explained"]
    assert "      members: false\n" in markdown
    with_options = "::: metasparse.toy\n    options:\n      show_submodules: true\n"
    assert api_modules.on_page_markdown(with_options, page, config, None) == with_options
    guide = SimpleNamespace(file=SimpleNamespace(src_uri="heads.md"))
    assert api_modules.on_page_markdown("::: metasparse.toy\n", guide, config, None) == "::: metasparse.toy\n"


def test_every_public_package_has_an_api_page_in_the_nav():
    directives = api_directives()
    missing = []
    for package, modules in public_modules():
        lists_modules = "show_submodules: true" in directives.get(package, "")
        missing += [name for name in modules or [package]
                    if name not in directives and not (modules and lists_modules)]
    assert not missing, (f"no API page for {missing}: add docs/api/<package>.md holding '::: <package>' "
                         "and its nav entry under 'API reference' in mkdocs.yml")
    assert {"metasparse.heads", "metasparse.solvers", "metasparse.tasks", "metasparse.data",
            "metasparse.experiments"} <= directives.keys()
    needing_pages = dict(public_modules())
    assert "metasparse.heads" in needing_pages and "metasparse.experiments.synthetic" in needing_pages[
        "metasparse.experiments"]


# ---------------------------------------------------------------------------------------------------------
# citation and license


def bibtex_block(document: str, key: str) -> str:
    text = (ROOT / document).read_text(encoding="utf-8")
    found = re.search(r"^```bibtex\n(@\w+\{" + key + r",.*?^\})\n", text, flags=re.DOTALL | re.MULTILINE)
    assert found, f"{document} has no BibTeX entry {key}"
    return found.group(1)


def bibtex_field(entry: str, name: str) -> str:
    value = re.search(rf"^\s*{name}\s*=\s*\{{(.*?)\}},?$", entry, flags=re.DOTALL | re.MULTILINE).group(1)
    return " ".join(value.split())


def test_the_paper_is_cited_alike_in_the_readme_the_home_page_and_citation_cff():
    entry = bibtex_block("README.md", "lachapelle2023synergies")
    assert entry == bibtex_block("docs/index.md", "lachapelle2023synergies")
    paper = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["preferred-citation"]
    assert bibtex_field(entry, "title") == paper["title"]
    assert bibtex_field(entry, "year") == str(paper["year"])
    assert bibtex_field(entry, "volume") == str(paper["volume"])
    assert bibtex_field(entry, "pages") == f"{paper['start']}--{paper['end']}"
    bibtex_authors = [author.split(",")[0].strip() for author in bibtex_field(entry, "author").split(" and ")]
    assert bibtex_authors == [author["family-names"] for author in paper["authors"]]


def test_citation_cff_describes_this_release():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == metasparse.__version__
    assert citation["license"] == setup["metadata"]["license"] == "Apache-2.0"
    cited = {reference["title"] for reference in citation["references"]}
    assert {"Meta-Learning with Differentiable Convex Optimization",
            "Prototypical Networks for Few-shot Learning",
            "Differentiable Convex Optimization Layers",
            "learn2learn: A Library for Meta-Learning Research"} <= cited


def test_license_file_is_the_apache_license_2_0():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("hook", [site_check, cli_reference, griffe_examples, api_modules],
                         ids=lambda hook: hook.__name__.removeprefix("docs_hook_"))
def test_hook_examples_pass(hook):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in finder.find(hook, hook.__name__):
        runner.run(test, out=report.write)
    assert runner.tries > 0 and runner.failures == 0, report.getvalue()
