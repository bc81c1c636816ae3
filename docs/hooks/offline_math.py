"""MkDocs hook: serve MathJax from the copy that the ``django-static-mathjax`` package installs.

The pages load ``assets/mathjax/tex-mml-chtml.js`` (see ``extra_javascript`` in mkdocs.yml). This hook
adds that bundle and the folders it loads on demand (TeX extensions, CHTML fonts, the menu, accessibility)
to the site's files, so formulas typeset with no network. The copy is MathJax's own release, installed by
pip with the ``docs`` extra; nothing of it is kept in this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MATHJAX_PACKAGE = "mathjax"  # the import name of django-static-mathjax
BUNDLE = "tex-mml-chtml.js"
SITE_FOLDER = "assets/mathjax"


def mathjax_release() -> Path:
    """The ``es5`` folder of the installed MathJax release (its combined bundles and components)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("MathJax is missing: pip install django-static-mathjax (the `docs` extra)")
    release = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (release / BUNDLE).is_file():
        raise PluginError(f"no {BUNDLE} in {release}: django-static-mathjax is not the expected release")
    return release


def release_files(release: Path) -> list[Path]:
    """The bundle the pages load and everything in the release's folders, relative to ``release``.

    The other combined bundles at the top level (SVG output, other input formats) are left out.
    """
    files = [Path(BUNDLE)]
    for folder in sorted(path for path in release.iterdir() if path.is_dir()):
        files.extend(path.relative_to(release) for path in sorted(folder.rglob("*")) if path.is_file())
    return files


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add MathJax's files under ``assets/mathjax/`` of the site."""
    release = mathjax_release()
    for relative in release_files(release):
        files.append(File.generated(config, f"{SITE_FOLDER}/{relative.as_posix()}",
                                    abs_src_path=str(release / relative)))
    return files
