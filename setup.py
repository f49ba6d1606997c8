"""Build hook: the wheel carries the repository's schema/ (with schema/functions/) and
triggers.sql.

The migrations and the triggers file live once, at the top of the repository, where people edit
them. `build_py` copies them into the built package as consumer/_bundle/schema/*.sql and
consumer/_bundle/triggers.sql, where consumer.settings looks first; a checkout or an editable
install has no such directory and reads them at the top of the repository instead. Every other
piece of packaging metadata is in pyproject.toml; MANIFEST.in puts the files in the sdist, so a
wheel built from the sdist carries them too."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLE = Path("consumer", "_bundle")


def bundled_files() -> list[tuple[Path, Path]]:
    """(source in the repository, path relative to the build directory) for each file."""
    schema = sorted(p for p in (ROOT / "schema").glob("*.sql") if p.is_file())
    if not schema:
        raise SystemExit(f"setup.py: no migrations in {ROOT / 'schema'}")
    functions = sorted(p for p in (ROOT / "schema" / "functions").glob("*.sql") if p.is_file())
    triggers = ROOT / "triggers.sql"
    if not triggers.is_file():
        raise SystemExit(f"setup.py: {triggers} is missing")
    return ([(p, BUNDLE / "schema" / p.name) for p in schema]
            + [(p, BUNDLE / "schema" / "functions" / p.name) for p in functions]
            + [(triggers, BUNDLE / "triggers.sql")])


class BuildPyWithSchema(build_py):  # type: ignore[misc]  # setuptools is untyped here
    def run(self) -> None:
        super().run()
        # An editable install imports consumer/ from the checkout, which has the files at the
        # top: a copy in the throwaway build directory would reach nobody.
        if self.editable_mode:
            return
        for src, rel in bundled_files():
            target = Path(self.build_lib) / rel
            self.mkpath(str(target.parent))
            self.copy_file(str(src), str(target), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        # what `install --record` and the wheel's RECORD see
        extra = [] if self.editable_mode else [
            str(Path(self.build_lib) / rel) for _, rel in bundled_files()]
        return [*super().get_outputs(include_bytecode), *extra]


setup(cmdclass={"build_py": BuildPyWithSchema})
