"""The console's front-end packages (htmx, CodeMirror 5), from the npm registry at install
time, served by the runtime itself (never a CDN at run time).

    python consumer/console/vendor.py      npm ci in consumer/console/assets (package-lock.json
                                           pins the versions), then copies the files below
                                           into consumer/console/static/vendor/
    ... vendor.py --copy-only              only the copy (node_modules installed already)

`make run`/`make test` call it on a fresh clone; the Dockerfile runs npm ci in a node stage
and the copy in the builder. It needs nothing but the standard library (run as a file, it
does not import the console's package), so it runs before anything is installed.
Without them the pages still work (forms, links, a plain textarea for the source): the layout
says which files are missing and how to get them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
VENDOR = HERE / "static" / "vendor"

# node_modules path → static/vendor path
FILES: tuple[tuple[str, str], ...] = (
    ("htmx.org/dist/htmx.min.js", "htmx.min.js"),
    ("codemirror/lib/codemirror.js", "codemirror/codemirror.js"),
    ("codemirror/lib/codemirror.css", "codemirror/codemirror.css"),
    ("codemirror/mode/javascript/javascript.js", "codemirror/javascript.js"),
    ("codemirror/addon/hint/show-hint.js", "codemirror/show-hint.js"),
    ("codemirror/addon/hint/show-hint.css", "codemirror/show-hint.css"),
    ("codemirror/addon/lint/lint.js", "codemirror/lint.js"),
    ("codemirror/addon/lint/lint.css", "codemirror/lint.css"),
    ("codemirror/addon/edit/matchbrackets.js", "codemirror/matchbrackets.js"),
    ("codemirror/addon/edit/closebrackets.js", "codemirror/closebrackets.js"),
    ("codemirror/addon/selection/active-line.js", "codemirror/active-line.js"),
    ("codemirror/LICENSE", "codemirror/LICENSE"),
    ("htmx.org/LICENSE", "htmx.LICENSE"),
)


@cache
def missing() -> tuple[str, ...]:
    """The vendor files that are not there (cached: they do not appear while serving)."""
    return tuple(dest for _, dest in FILES if not (VENDOR / dest).is_file())


def build(assets: Path = ASSETS, vendor: Path = VENDOR, install: bool = True) -> None:
    if install:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("console assets: npm is not installed (Node.js); the console "
                             "runs without its code editor and live updates until it is, "
                             "then run `make` again")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=assets, check=True)
    for src, dest in FILES:
        target = vendor / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(assets / "node_modules" / src, target)
    missing.cache_clear()


def main(argv: list[str]) -> int:
    try:
        build(install="--copy-only" not in argv)
    except subprocess.CalledProcessError as exc:
        print(f"console assets: npm ci failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    print(f"console assets: {len(FILES)} files in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
