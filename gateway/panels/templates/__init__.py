"""HTML templates (string.Template, `$name` placeholders; values are escaped by the caller)."""

from __future__ import annotations

import functools
from pathlib import Path
from string import Template


@functools.cache
def load_template(name: str) -> Template:
    return Template((Path(__file__).parent / name).read_text(encoding="utf-8"))
