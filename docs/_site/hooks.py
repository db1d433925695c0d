"""MkDocs hooks for the documentation site (mkdocs.yml names this file under ``hooks``).

- The README is the home page and benchmarks/README.md a page, although both live outside docs/: they are
  added as generated pages with their relative links rewritten for the site, so the files stay the ones
  GitHub shows and nothing is copied by hand.
- MathJax (the SVG build, which needs no web fonts) is copied from the ``django-static-mathjax`` package of
  the ``[docs]`` extra, so math renders with no network, also when the site is opened from disk.
- Every subpackage that ``modscale.__all__`` exports must have its page under docs/api/, and every name of
  its ``__all__`` must be rendered there: anything missing is a warning, which the strict build turns into
  a failure.
"""

from __future__ import annotations

import ast
import importlib.resources
import logging
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "modscale"
MATHJAX = "es5/tex-svg-full.js"  # every TeX extension in one file: nothing is loaded on demand
MATHJAX_DEST = "_site/mathjax/tex-svg-full.js"  # mkdocs.yml's extra_javascript names this path

# (source file, page in the site, {path prefix in the source: its replacement in the site})
OUTSIDE_PAGES = (
    ("README.md", "index.md", {"docs/": "", "benchmarks/README.md": "benchmarks.md"}),
    ("benchmarks/README.md", "benchmarks.md", {"../docs/": "", "../README.md": "index.md"}),
)

log = logging.getLogger("mkdocs.plugins.modscale")
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def _rewrite_links(text: str, prefixes: dict[str, str]) -> str:
    """Relative link targets that start with a prefix get its replacement; all others are kept, so that a
    link to something outside the site is reported by MkDocs' link validation instead of silently broken."""

    def repl(match: re.Match) -> str:
        target = match.group(2)
        for old, new in prefixes.items():
            if target.startswith(old):
                target = new + target[len(old) :]
                break
        return match.group(1) + target + match.group(3)

    return _LINK.sub(repl, text)


def on_files(files: Files, config) -> Files:
    for source, page, prefixes in OUTSIDE_PAGES:
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=_rewrite_links(text, prefixes)))
    mathjax = importlib.resources.files("mathjax") / "static" / "mathjax" / MATHJAX
    files.append(File.generated(config, MATHJAX_DEST, abs_src_path=str(mathjax)))
    return files


def _exported(name: str) -> list[str]:
    """``__all__`` of modscale.<name>, read from the source (no import: the build never loads torch)."""
    package = SRC / name / "__init__.py"
    tree = ast.parse((package if package.is_file() else SRC / f"{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def on_post_build(config) -> None:
    """Every subpackage of ``modscale.__all__`` has its API page, and every name its ``__all__`` exports
    is rendered there; anything missing is a warning, which the strict build turns into a failure."""
    import modscale  # its subpackages load lazily: this imports nothing heavy

    api = Path(config["site_dir"]) / "api"
    for name in modscale.__all__:
        if name == "__version__":
            continue
        page = api / f"{name}.html"
        if not page.is_file():
            log.warning(
                "modscale.%s is exported by modscale.__all__ but has no page docs/api/%s.md", name, name
            )
            continue
        html = page.read_text(encoding="utf-8")
        for member in _exported(name):
            path = f"modscale.{name}.{member}"
            # modscale.plots.figure is a function and the name of its submodule: it is rendered by its
            # module's path, modscale.plots.figure.figure.
            if f'id="{path}"' not in html and f'id="{path}.{member}"' not in html:
                log.warning("%s is exported but not rendered on docs/api/%s.md", path, name)
