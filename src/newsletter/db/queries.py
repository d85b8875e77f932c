"""Named SQL queries, kept in `.sql` files beside this module and loaded once.

A file holds any number of queries, each introduced by a `-- name: query_name` line.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in resources.files("newsletter.db").joinpath("queries").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        pieces = _NAME.split(text)
        for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice")
            found[name] = body.strip()
    return found


def query(name: str) -> str:
    return _all()[name]
