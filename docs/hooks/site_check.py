"""Check a built site: no remote asset, no broken internal link, no docstring example mangled into text.

Run after every build as a MkDocs hook (``on_post_build``: the build fails on any problem, so the test
command's ``mkdocs build --strict`` runs it), or by hand on a built site::

    python docs/hooks/site_check.py site/

An *asset* is what a browser fetches to show a page: scripts, stylesheets, fonts, images, frames, media,
and CSS ``url()`` / ``@import``. A remote one (``http:``, ``https:``, ``//host``) breaks the page offline.
Links to other sites (``<a href="https://...">``) are references, not assets, and are allowed. An
*internal link* is any relative or root-relative ``href``/``src``: its file must exist in the site and its
``#fragment``, if any, must be an ``id`` of the page it points to. A docstring example that reached
Markdown as text shows as nested ``<blockquote>`` (its ``>>>``) or as a ``>>>`` outside ``<pre>``/``<code>``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

# <link rel=...> values that make the browser fetch the target as part of the page
ASSET_LINK_RELS = frozenset({"stylesheet", "icon", "shortcut", "apple-touch-icon", "mask-icon", "manifest",
                             "preload", "modulepreload", "prefetch", "prerender"})
ASSET_ATTRIBUTES = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"),
                    "iframe": ("src",), "frame": ("src",), "embed": ("src",), "video": ("src", "poster"),
                    "audio": ("src",), "track": ("src",), "object": ("data",), "input": ("src",),
                    "image": ("href",), "use": ("href",)}
_CSS_REFERENCE = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""", flags=re.IGNORECASE)
_CODE_TAGS = frozenset({"pre", "code", "script", "textarea"})
_NOT_FETCHED = ("data:", "mailto:", "tel:", "javascript:", "about:", "blob:")
MAX_REPORTED = 50


@dataclass
class PageRefs:
    """What one HTML page references and which fragment ids it defines."""

    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    mangled_examples: list[str] = field(default_factory=list)  # signs of an example mangled into text


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs = PageRefs()
        self._in_style = False
        self._code_depth = 0
        self._quote_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        for name in ("id", "name") if tag == "a" else ("id",):
            if name in values:
                self.refs.ids.add(values[name])
        if "style" in values:
            self.refs.assets.extend(css_references(values["style"]))
        if tag == "link" and "href" in values:
            rels = set(values.get("rel", "").lower().split())
            (self.refs.assets if rels & ASSET_LINK_RELS else self.refs.links).append(values["href"])
        elif tag in ("a", "area") and "href" in values:
            self.refs.links.append(values["href"])
        for attribute in ASSET_ATTRIBUTES.get(tag, ()):
            if attribute in values:
                urls = values[attribute]
                self.refs.assets.extend(_srcset(urls) if attribute == "srcset" else [urls])
        self._in_style = tag == "style"
        if tag in _CODE_TAGS:
            self._code_depth += 1
        if tag == "blockquote":
            self._quote_depth += 1
            if self._quote_depth == 2:  # ">>> x" in Markdown is three nested quotes
                self.refs.mangled_examples.append("nested <blockquote>")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in _CODE_TAGS and self._code_depth:
            self._code_depth -= 1
        if tag == "blockquote" and self._quote_depth:
            self._quote_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.refs.assets.extend(css_references(data))
        elif not self._code_depth and ">>>" in data:
            self.refs.mangled_examples.append(" ".join(data.split())[:60])


def _srcset(value: str) -> list[str]:
    return [candidate.split()[0] for candidate in value.split(",") if candidate.strip()]


def css_references(css: str) -> list[str]:
    """The URLs that a stylesheet (or a ``style`` attribute) fetches through ``url()`` and ``@import``.

    Example:
        >>> css_references('@import "https://fonts.example/x.css"; a { background: url(img/a.png) }')
        ['https://fonts.example/x.css', 'img/a.png']
    """
    return [match.group(2) or match.group(4) for match in _CSS_REFERENCE.finditer(css)
            if match.group(2) or match.group(4)]


def page_refs(html: str) -> PageRefs:
    """Parse one HTML page.

    Example:
        >>> refs = page_refs('<h2 id="a">A</h2><a href="b/#c">b</a><script src="x.js"></script>')
        >>> refs.ids, refs.links, refs.assets
        ({'a'}, ['b/#c'], ['x.js'])
    """
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.refs


def is_remote(url: str) -> bool:
    """Whether fetching ``url`` would leave the site (a scheme other than ``data:`` and the like, or ``//``).

    Example:
        >>> is_remote("https://cdn.example/x.js"), is_remote("//cdn.example/x.js"), is_remote("../x.js")
        (True, True, False)
    """
    parts = urlsplit(url.strip())
    return bool(parts.netloc) or (bool(parts.scheme) and not url.strip().lower().startswith(_NOT_FETCHED))


def _target(site: Path, source: Path, url: str) -> tuple[Path, str] | None:
    """The file inside ``site`` that ``url`` (found in ``source``) points to, and its fragment."""
    parts = urlsplit(url.strip())
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        return source, unquote(parts.fragment)
    page_folder = PurePosixPath(source.parent.relative_to(site).as_posix())
    folder = PurePosixPath() if path.startswith("/") else page_folder
    resolved = _normalise(folder / path.lstrip("/"))
    target = site.joinpath(*resolved.parts) if resolved.parts else site
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def _normalise(path: PurePosixPath) -> PurePosixPath:
    """``path`` without ``.`` and ``..`` parts; ``..`` at the site's root stays there, as in a browser."""
    parts: list[str] = []
    for part in path.parts:
        if part in ("", ".", "/"):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return PurePosixPath(*parts)


def check_site(site: Path) -> list[str]:
    """Every remote asset, broken internal link and mangled example of the site in ``site``, readably.

    Example:
        >>> import tempfile
        >>> site = Path(tempfile.mkdtemp())
        >>> _ = (site / "index.html").write_text('<a href="missing/">x</a><a href="#top">y</a>')
        >>> for problem in check_site(site):
        ...     print(problem)
        index.html: broken link 'missing/' (no file missing/index.html)
        index.html: broken link '#top' (no id 'top' in index.html)
    """
    site = site.resolve()
    pages = {path: page_refs(path.read_text(encoding="utf-8", errors="replace"))
             for path in sorted(site.rglob("*.html"))}
    problems = []
    for path in sorted(site.rglob("*.css")):
        for url in css_references(path.read_text(encoding="utf-8", errors="replace")):
            problems += _problems(site, path, url, pages, asset=True)
    for path, refs in pages.items():
        for url in refs.assets:
            problems += _problems(site, path, url, pages, asset=True)
        for url in refs.links:
            problems += _problems(site, path, url, pages, asset=False)
        where = path.relative_to(site).as_posix()
        problems += [f"{where}: example rendered as text ({text!r})" for text in refs.mangled_examples]
    return problems


def _problems(site: Path, source: Path, url: str, pages: dict[Path, PageRefs], asset: bool) -> list[str]:
    where = source.relative_to(site).as_posix()
    if is_remote(url):
        return [f"{where}: remote asset {url!r}"] if asset else []
    found = _target(site, source, url)
    if found is None:
        return []
    target, fragment = found
    shown = target.relative_to(site).as_posix()
    if not target.is_file():
        return [f"{where}: broken {'asset' if asset else 'link'} {url!r} (no file {shown})"]
    if fragment and target.suffix == ".html" and fragment not in pages[target].ids:
        return [f"{where}: broken link {url!r} (no id {fragment!r} in {shown})"]
    return []


def on_post_build(config: MkDocsConfig) -> None:
    """Fail the build if the site it wrote has a remote asset or a broken internal link."""
    problems = check_site(Path(config.site_dir))
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise PluginError(f"the built site has {len(problems)} problem(s):\n  {shown}{more}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python docs/hooks/site_check.py SITE_DIR")
    found_problems = check_site(Path(sys.argv[1]))
    print("\n".join(found_problems) or f"{sys.argv[1]}: no remote asset, no broken internal link")
    sys.exit(1 if found_problems else 0)
