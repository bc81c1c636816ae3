"""MkDocs hook: each API page of a package ends with the docstrings of the package's modules.

An API page documents a package through its public names (``::: metasparse.heads``, which lists the
package's ``__all__``). What its modules' docstrings explain (the math a solver follows, the protocol of
a metric, the layout of a file) would be lost there, so this hook appends a "Modules" section holding the
docstring of every public module whose docstring says more than its one-line summary. New modules appear
by themselves; their names stay documented once, in the section above.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

API_FOLDER = "api/"
# a directive on a package, alone on its line, with no options (a page with options chooses its own layout)
_PACKAGE_DIRECTIVE = re.compile(r"^::: (metasparse\.\w+)[ \t]*$(?!\n[ ]{4})", flags=re.MULTILINE)
SECTION_INTRO = ("What the package's modules explain, from their docstrings. Their public names are "
                 "documented above, under the package's name.")


def explained_modules(package_dir: Path, package: str) -> list[str]:
    """The dotted names of ``package``'s public modules whose docstring has more than one line, in file order.

    Example:
        >>> import metasparse.solvers
        >>> "metasparse.solvers.lasso" in explained_modules(Path(metasparse.solvers.__file__).parent,
        ...                                                 "metasparse.solvers")
        True
    """
    names = []
    for path in sorted(package_dir.glob("[!_]*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if len(docstring.strip().splitlines()) > 1:
            names.append(f"{package}.{path.stem}")
    return names


def modules_section(modules: list[str]) -> str:
    """Markdown: a "Modules" section with one docstring-only directive per module."""
    options = ("members: false", "show_root_heading: true", "show_root_full_path: true", "heading_level: 3")
    directives = [f"::: {name}\n    options:\n" + "".join(f"      {option}\n" for option in options)
                  for name in modules]
    return "\n\n## Modules\n\n" + SECTION_INTRO + "\n\n" + "\n".join(directives)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Append the "Modules" section to each API page that documents a package."""
    if not page.file.src_uri.startswith(API_FOLDER):
        return markdown
    root = Path(config.config_file_path).parent
    modules = []
    for package in _PACKAGE_DIRECTIVE.findall(markdown):
        package_dir = root.joinpath(*package.split("."))
        if (package_dir / "__init__.py").is_file():
            modules += explained_modules(package_dir, package)
    return markdown + modules_section(modules) if modules else markdown
