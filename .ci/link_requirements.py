"""Hard-link into a fresh virtual environment the installed distributions a wheel requires, and theirs.

    python .ci/link_requirements.py WHEEL VENV_PYTHON

Run with the Python of the building environment. Reads the wheel's Requires-Dist (no extras), walks the
requirements of the distributions installed here, and for each one that is installed here, satisfies the
requirement and lives on the same file system, hard-links its files (package folders and dist-info, as pip
wrote them) into the target's site-packages. Only what the wheel declares is linked: a module it imports
without declaring it stays missing, and the smoke runs fail. Prints the linked distributions; whatever
could not be linked, pip then installs from the registry.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_requirements(wheel: str) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [
        Requirement(line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def _applies(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({"extra": ""})


def main(wheel: str, venv_python: str) -> None:
    purelib = subprocess.check_output(
        [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    target = Path(purelib)
    installed = {_canonical(d.metadata["Name"]): d for d in md.distributions()}
    todo = [r for r in _wheel_requirements(wheel) if _applies(r)]
    seen: set[str] = set()
    linked = []
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name in seen:
            continue
        seen.add(name)
        dist = installed.get(name)
        if dist is None or not req.specifier.contains(dist.version, prereleases=True):
            continue  # pip installs it
        site = Path(dist.locate_file(""))
        if os.stat(site).st_dev != os.stat(target).st_dev or not dist.files:
            continue
        tops = sorted({f.parts[0] for f in dist.files if f.parts and f.parts[0] != ".."})
        paths = [str(site / t) for t in tops if (site / t).exists() and not (target / t).exists()]
        if paths:
            subprocess.run(["cp", "-al", *paths, str(target)], check=True)
        linked.append(f"{dist.metadata['Name']}=={dist.version}")
        todo.extend(r for r in (Requirement(s) for s in dist.requires or []) if _applies(r))
    print(" ".join(sorted(linked, key=str.lower)))


if __name__ == "__main__":
    main(*sys.argv[1:])
