"""Keeps the manual's generated tables (metrics, flags) in step with the code: ``python -m exporter.docs``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from exporter.catalogue import markdown_table
from exporter.config import FLAGS


def flags_table() -> str:
    lines = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for f in FLAGS:
        default = "-" if f.default_text is None else f"`{f.default_text}`"
        choices = f" One of: {', '.join(f.choices)}." if f.choices and f.name != "source.gpu" else ""
        bounds = f" Range: {f.bounds_text}." if f.bounds_text else ""
        lines.append(f"| `--{f.name}` | `{f.env}` | {default} | {f.help}{choices}{bounds} |")
    return "\n".join(lines) + "\n"


SECTIONS = {"metrics": markdown_table, "flags": flags_table}
DOCS = Path(__file__).resolve().parent.parent / "docs"
# Which page of the manual holds which generated section.
PAGES = {"metrics": "metrics.md", "flags": "configuration.md"}


def render(text: str, names: tuple[str, ...] = tuple(SECTIONS)) -> str:
    """The page with each named generated section replaced by what the code says now."""
    for name in names:
        build = SECTIONS[name]
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"page has no <!-- {name}:start --> ... <!-- {name}:end --> section")
        text = pattern.sub(lambda m, b=build: m.group(1) + b() + m.group(2), text)  # type: ignore[misc]
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    docs = Path(args[0]) if args else DOCS
    for name, page in PAGES.items():
        path = docs / page
        text = path.read_text(encoding="utf-8")
        path.write_text(render(text, (name,)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
