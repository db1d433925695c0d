"""A griffe extension (mkdocs.yml loads it for mkdocstrings) that turns the reST markup of modscale's
docstrings into the Markdown the site renders, before any docstring is parsed.

- Roles (:func:`train`, :class:`~modscale.errors.InvalidValue`, :mod:`.moments`, ...) become links. The
  target is resolved as Python would from where the docstring is (the module's imports and members, the
  class's members): a target that exists becomes an *optional* reference, a link when the object has a page
  in the API reference and plain code when it is private; a target that resolves to nothing stays a
  required reference, which autorefs reports and the strict build fails on.
- numpy-style ``name : description`` entries get their description on the next line, where numpydoc
  expects it (the text after the colon is the type's place, and the signature gives the types).
- ``.. math::`` blocks become display math for pymdownx.arithmatex (MathJax renders them).
- ``Example::`` and other paragraphs ending in ``::`` end in ``:``, and the indented block after them is
  fenced as code, as reST meant it to be.
- Doctest lines (``>>>``) are fenced as ``pycon``: Markdown would otherwise render them as nested quotes.
- ``<`` in prose is escaped: docstrings hold no HTML, and ``<a, b>`` would otherwise vanish as a tag.
"""

from __future__ import annotations

import html
import re

from griffe import Extension, Module, NameResolutionError, Object

_ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj):`(~?)([^`<>]+?)`")
_MATH = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_PARAMETER_SECTION = re.compile(r"^\s*(Parameters|Other Parameters|Attributes|Keyword Arguments)\s*$")
_ENTRY = re.compile(
    r"^\s*(?P<names>\*{0,2}[A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s+:\s+(?P<text>\S.*)$"
)


def _lookup(root: Module, path: str) -> bool:
    """Whether ``path`` (dotted, from the package root) names an object griffe knows."""
    parts = path.split(".")
    if parts[0] != root.name:
        return False
    obj = root
    for part in parts[1:]:
        try:
            obj = obj.all_members[part]
        except Exception:  # KeyError, or an alias whose target lies outside the package
            return False
    return True


def _resolve(obj: Object, root: Module, target: str) -> str | None:
    """The full dotted path ``target`` refers to from ``obj``'s scope, or None when nothing matches."""
    candidates: list[str] = []
    if target.startswith("."):  # relative to the docstring's package
        module = obj.module
        package = module if module.is_init_module else module.parent
        candidates.append(package.path + target)
    elif target.split(".")[0] == root.name:
        candidates.append(target)
    else:
        head, _, rest = target.partition(".")
        scope: Object | None = obj
        while scope is not None:
            try:
                resolved = scope.resolve(head)
            except NameResolutionError:
                scope = scope.parent
                continue
            candidates.append(resolved + ("." + rest if rest else ""))
            break
    for path in candidates:
        if _lookup(root, path):
            return path
    return None


def _role(obj: Object, root: Module, match: re.Match) -> str:
    tilde, target = match.group(2), match.group(3).strip()
    label = html.escape(target.rsplit(".", 1)[-1] if tilde else target.lstrip("."))
    path = _resolve(obj, root, target.lstrip("~"))
    if path is None:
        return f'<autoref identifier="{html.escape(target)}"><code>{label}</code></autoref>'
    return f'<autoref identifier="{path}" optional><code>{label}</code></autoref>'


def _math_blocks(lines: list[str]) -> list[str]:
    """``.. math:: first line`` and the lines indented under it (up to a blank line) become ``$$ ... $$``."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH.match(lines[i])
        i += 1
        if not match:
            out.append(lines[i - 1])
            continue
        indent = match.group("indent")
        body = [match.group("first").strip()] if match.group("first").strip() else []
        if not body:  # the formula may start after a blank line
            while i < len(lines) and not lines[i].strip():
                i += 1
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > len(indent):
            body.append(lines[i].strip())
            i += 1
        out += [f"{indent}$$", *(indent + line for line in body), f"{indent}$$"]
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _numpy_parameters(lines: list[str]) -> list[str]:
    """In numpy-style parameter lists, modscale writes ``name : description`` (the slot numpydoc keeps for
    the type) and lets the signature carry the types; the description moves to its own indented line, where
    the numpy parser reads it as the description."""
    out: list[str] = []
    base: int | None = None  # the indentation of the entries of the section being read
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.strip() and set(following.strip()) == {"-"}:  # a section header comes
            base = _indent(line) if _PARAMETER_SECTION.match(line) else None
        entry = _ENTRY.match(line)
        if base is not None and entry and _indent(line) == base:
            pad = " " * base
            out += [pad + entry.group("names"), pad + "    " + entry.group("text")]
        else:
            out.append(line)
    return out


def _literal_blocks(lines: list[str]) -> list[str]:
    """reST's ``text::`` before an indented block becomes ``text:`` and the block a fenced code block at
    the paragraph's own indentation (a Google-style section would otherwise dedent it into prose)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line.endswith("::") or line.endswith(":::"):
            out.append(line)
            continue
        base = _indent(line)
        text = line[:-1] if line.strip() != "::" else ""
        start = i
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start == len(lines) or _indent(lines[start]) <= base:
            out.append(text)
            continue
        end = start
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        block = lines[start:end]
        while not block[-1].strip():
            block.pop()
        shift = min(_indent(b) for b in block if b.strip())
        pad = " " * base
        out += [
            text,
            "",
            pad + "```python",
            *(pad + b[shift:] if b.strip() else "" for b in block),
            pad + "```",
        ]
        if end < len(lines):
            out.append("")
        i = end
    return out


def _doctests(lines: list[str]) -> list[str]:
    """Runs of doctest lines (``>>>`` and what follows up to a blank line) get a ``pycon`` fence."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        pad = " " * _indent(lines[i])
        out.append(pad + "```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(pad + "```")
    return out


def _escape_angles(lines: list[str]) -> list[str]:
    """``<`` in prose is text, never HTML: ``<df(x)/dtheta, df(z)/dtheta>`` would vanish as an unknown tag.
    Code spans, fenced code and display math are left as they are."""
    out: list[str] = []
    verbatim = None  # the fence or "$$" of the block being passed through
    for line in lines:
        mark = line.strip()
        if verbatim is None and (mark.startswith("```") or mark == "$$"):
            verbatim = "```" if mark.startswith("```") else "$$"
        elif verbatim is not None:
            if mark == verbatim:
                verbatim = None
        else:
            parts = _CODE_SPAN.split(line)  # odd parts are code spans
            line = "".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))
        out.append(line)
    return out


def to_markdown(text: str, obj: Object, root: Module) -> str:
    lines = _numpy_parameters(_math_blocks(text.splitlines()))
    lines = _escape_angles(_doctests(_literal_blocks(lines)))
    return _ROLE.sub(lambda m: _role(obj, root, m), "\n".join(lines))


class RestToMarkdown(Extension):
    """Rewrites every docstring of the package once it is fully loaded (so that names resolve)."""

    def on_package(self, *, pkg: Module, **kwargs) -> None:
        seen: set[int] = set()
        stack: list[Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value, obj, pkg)
            stack.extend(member for member in obj.members.values() if not member.is_alias)
