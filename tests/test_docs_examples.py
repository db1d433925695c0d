"""Every ```python block of README.md and of docs/ runs, and the numbers its comments show are the ones it
computes.

- The blocks of one file run in order in one namespace (a reader pastes them one after the other), in a
  temporary folder, under this suite's settings: one thread, and warnings are errors.
- A block that is only illustrative (an excerpt with undefined names, a template) is marked by an HTML
  comment on the line before its fence, ``<!-- illustrative: why -->``; its test is skipped with that reason.
- A comment that starts with a value states what the statement computes, and is checked:

  - ``train, test = monolithic_losses(...)  # 0.390, 1.561``: the values, each to the decimals shown;
  - ``print(recovery_score(U, U_true))  # ~1.0: the true modules``: the numbers print writes (``~`` only
    says that the text rounds);
  - ``X, y = task.sample(2000)  # (2000, 8), (2000, 1) float32``: a tuple of integers is a shape, a dtype
    after it is checked too, and a name in it (``(n, 4)``) matches any size.

  A tuple with decimals is a tuple of values. A number followed by a word (``# 3 replicas``) is prose, not a
  value. The statement's value is that of an expression, of an assignment's targets, or what ``print``
  writes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
# Files whose blocks train networks for more than a few seconds on one thread.
SLOW = {"README.md", "docs/cifar.md", "docs/learning-rule.md"}
# Files whose blocks load CIFAR-10 (found beside the checkout, or where MODSCALE_DATA says).
NEEDS_CIFAR10 = {"docs/cifar.md"}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(.*?)\s*-->\s*$")
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)"
_DTYPE = r"(?:float|int|uint|bool|complex)\d*"
# One stated value: a tuple of numbers or names, or a number that is not a count in prose ("3 replicas"),
# each optionally followed by a dtype.
_ITEM = re.compile(
    rf"""\s* (~?) (
        \( (?: \s* (?:{_NUMBER}|[A-Za-z_]\w*) \s* ,? )* \)     # (0.390, 1.561), (4, 1, 16), (n, 4)
      | {_NUMBER} (?![\w.]) (?!\s+[A-Za-z])                     # 0.99, but not 3 in "3 replicas"
    ) (?: \s+ ({_DTYPE}) \b )?""",
    re.X,
)


@dataclass
class Block:
    path: str
    index: int  # 1-based, counting every python block of the file
    line: int  # of the first code line in the file
    code: str
    illustrative: str | None  # the reason, for a block that is not run

    @property
    def name(self) -> str:
        return f"{self.path}:block{self.index}"


def blocks(path: str) -> list[Block]:
    text = (ROOT / path).read_text(encoding="utf-8")
    found = []
    for index, match in enumerate(_FENCE.finditer(text), start=1):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _ILLUSTRATIVE.search(before)
        line = text.count("\n", 0, match.start(1)) + 1
        found.append(Block(path, index, line, match.group(1), reason.group(1) if reason else None))
    return found


ALL = [b for path in FILES for b in blocks(path)]


# ---------------------------------------------------------------------------------------------------------
# What a comment says


@dataclass
class Expected:
    text: str  # the comment, for messages
    items: list[tuple[str, Any, str | None]] = field(default_factory=list)  # (kind, value, dtype)


def expected(comment: str) -> Expected | None:
    """The values a comment states, or None when it starts with prose."""
    body = comment.lstrip("#").strip()
    out = Expected(comment)
    pos = 0
    while True:
        match = _ITEM.match(body, pos)
        if not match:
            break
        token, dtype = match.group(2), match.group(3)
        if token.startswith("("):
            parts = [p.strip() for p in token[1:-1].split(",") if p.strip()]
            if any(re.fullmatch(_NUMBER, p) and not p.lstrip("+-").isdigit() for p in parts):
                out.items += [("number", p, None) for p in parts]  # a tuple of values, not a shape
            else:
                out.items.append(("shape", parts, dtype))
        else:
            out.items.append(("number", token, dtype))
        pos = match.end()
        if not body.startswith(",", pos):
            break
        pos += 1
    return out if out.items else None


def leaves(value: Any) -> list[Any]:
    """Tuples and lists are opened; arrays, tensors and scalars are leaves."""
    if isinstance(value, tuple | list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def check(exp: Expected, value: Any, printed: str | None, where: str) -> None:
    if printed is not None:
        got: list[Any] = [float(x) for x in re.findall(_NUMBER, printed)]
    else:
        got = leaves(value)
        if all(kind == "number" for kind, _, _ in exp.items):  # the values of arrays, in order
            got = [x for leaf in got for x in (_numpy(leaf).ravel() if np.ndim(_numpy(leaf)) else [leaf])]
    assert len(got) == len(exp.items), (
        f"{where}: the comment {exp.text!r} shows {len(exp.items)} values, got {got!r}"
    )
    for (kind, want, dtype), leaf in zip(exp.items, got, strict=True):
        if kind == "shape":
            shape = tuple(getattr(leaf, "shape", ()))
            ok = len(shape) == len(want) and all(
                w == str(size) or not w.isdigit() for w, size in zip(want, shape, strict=True)
            )
            assert ok, f"{where}: the comment {exp.text!r} shows shape ({', '.join(want)}), got {shape}"
        else:
            decimals = len(want.split(".")[1]) if "." in want and "e" not in want.lower() else 0
            number = float(_numpy(leaf))
            assert round(number, decimals) == float(want), (
                f"{where}: the comment {exp.text!r} shows {want}, got {number!r}"
            )
        if dtype is not None:
            assert str(leaf.dtype).rsplit(".", 1)[-1] == dtype, f"{where}: {exp.text!r}: dtype {leaf.dtype}"


# ---------------------------------------------------------------------------------------------------------
# Running a block statement by statement


def comments(code: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def run_block(block: Block, namespace: dict) -> None:
    tree = ast.parse(block.code, filename=block.path)
    stated = {line: exp for line, text in comments(block.code).items() if (exp := expected(text))}
    for stmt in tree.body:
        lines = range(stmt.lineno, stmt.end_lineno + 1)
        exps = [stated.pop(line) for line in lines if line in stated]
        where = f"{block.name} (line {block.line + stmt.lineno - 1})"
        if isinstance(
            stmt, ast.FunctionDef | ast.ClassDef | ast.For | ast.While | ast.If | ast.With | ast.Try
        ):
            assert not exps, f"{where}: a value comment inside a compound statement cannot be checked"
        assert len(exps) <= 1, f"{where}: one statement, several value comments"
        module = ast.Module([stmt], type_ignores=[])
        ast.increment_lineno(module, block.line - 1)  # tracebacks point into the Markdown file
        buffer = io.StringIO()
        value = printed = None
        is_print = (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and getattr(stmt.value.func, "id", None) == "print"
        )
        with contextlib.redirect_stdout(buffer) if is_print else contextlib.nullcontext():
            if isinstance(stmt, ast.Expr) and not is_print:
                expr = ast.Expression(stmt.value)
                value = eval(compile(expr, block.path, "eval"), namespace)
            else:
                exec(compile(module, block.path, "exec"), namespace)
        if is_print:
            printed = buffer.getvalue()
            print(printed, end="")  # still shown, with pytest -s
        elif isinstance(stmt, ast.Assign | ast.AnnAssign) and exps:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
            value = eval(ast.unparse(target), namespace)  # the names just assigned
        if exps:
            check(exps[0], value, printed, where)


# ---------------------------------------------------------------------------------------------------------
# The tests: one per block, the blocks of a file sharing one namespace


@dataclass
class FileState:
    namespace: dict = field(default_factory=lambda: {"__name__": "__main__"})
    done: int = 0  # blocks run so far
    failed: str | None = None


_STATE: dict[str, FileState] = {}


def _param(block: Block):
    marks = [pytest.mark.slow] if block.path in SLOW else []
    return pytest.param(block, id=block.name, marks=marks)


@pytest.fixture
def docs_env(tmp_path_factory, monkeypatch):
    """The file's own working folder, and the CIFAR-10 decode cache shared with the CIFAR tests."""

    def enter(path: str) -> None:
        folder = tmp_path_factory.getbasetemp() / "docs-examples" / path.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(folder)
        monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path_factory.getbasetemp() / "modscale-cache"))

    return enter


@pytest.mark.parametrize(
    "comment, items",
    [
        ("# (0.390, 1.561)", [("number", "0.390", None), ("number", "1.561", None)]),
        ("# 49, 1201: grows", [("number", "49", None), ("number", "1201", None)]),
        ("# ~1.0: the true modules", [("number", "1.0", None)]),
        ("# (4, 1, 16), before training", [("shape", ["4", "1", "16"], None)]),
        ("# (256, 3), (256,) int64", [("shape", ["256", "3"], None), ("shape", ["256"], "int64")]),
        ("# (n, 4): what each module sees", [("shape", ["n", "4"], None)]),
        ("# 3 replicas, one batched model", None),
        ("# R^2 on held-out data", None),
    ],
)
def test_what_a_comment_states(comment, items):
    exp = expected(comment)
    assert (exp.items if exp else None) == items


def test_a_wrong_number_or_shape_fails():
    check(expected("# 0.390, (2, 3)"), (0.38988, np.zeros((2, 3))), None, "here")
    with pytest.raises(AssertionError, match="shows 0.391"):
        check(expected("# 0.391"), 0.38988, None, "here")
    with pytest.raises(AssertionError, match=r"shows shape \(2, 4\)"):
        check(expected("# (2, 4)"), torch.zeros(2, 3), None, "here")
    with pytest.raises(AssertionError, match="shows 2 values"):
        check(expected("# 0.5, 0.7"), None, "0.5\n", "here")


def test_every_illustrative_marker_sits_on_a_python_block():
    """A marker anywhere else would skip nothing, and its block would run unannounced or not at all."""
    assert "README.md" in FILES and "docs/theory.md" in FILES
    for path in FILES:
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if _ILLUSTRATIVE.search(line):
                following = lines[i + 1] if i + 1 < len(lines) else ""
                assert following.startswith("```python"), (
                    f"{path}:{i + 1}: the marker is not on a python block"
                )


@pytest.mark.parametrize("block", [_param(b) for b in ALL])
def test_block(block: Block, docs_env):
    if block.illustrative:
        pytest.skip(f"illustrative: {block.illustrative}")
    if block.path in NEEDS_CIFAR10:
        _need_cifar10()
    docs_env(block.path)
    state = _STATE.setdefault(block.path, FileState())
    for earlier in blocks(block.path)[state.done : block.index]:
        if state.failed:
            pytest.fail(f"{state.failed} failed, and this block runs after it")
        if earlier.illustrative is None:
            try:
                run_block(earlier, state.namespace)
            except BaseException:
                state.failed = earlier.name
                raise
        state.done = earlier.index


def _need_cifar10() -> None:
    from modscale.data import locate_cifar10
    from modscale.errors import InvalidValue

    try:
        locate_cifar10()
    except InvalidValue as err:
        pytest.skip(f"CIFAR-10 not available: {err}")


def test_every_docstring_entry_names_one_parameter():
    # numpy-style "width, depth : ..." renders in the API reference as two rows, the second with the first's
    # type and default (depth shown as 32, lr as 3000): each parameter or attribute gets its own entry
    entry = re.compile(r"^\s{4,8}[a-z_0-9]+(?:, [a-z_0-9]+)+(?: :.*)?$")
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted((ROOT / "src" / "modscale").rglob("*.py"))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if entry.match(line)
    ]
    assert not found, "entries naming several parameters:\n" + "\n".join(found)
