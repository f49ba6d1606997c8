"""`jsrt` subcommands beyond the core ones: each module here defines
`register(subparsers) -> None`, adding its parsers with `set_defaults(func=async_fn)` where
`async_fn(args, settings) -> int` is the exit code."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
