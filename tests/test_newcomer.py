"""What a newcomer meets first: the README's two commands, make help, links that resolve, a LICENSE, and the
test prerequisites that .ci/run installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def tracked_files() -> set[str]:
    git = shutil.which("git")
    assert git, "git is needed to list the repository's files"
    out = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_link_points_at_a_file_the_repository_ships() -> None:
    shipped = tracked_files()
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve().relative_to(ROOT).as_posix()
            assert path in shipped or any(f.startswith(path + "/") for f in shipped), f"{page.name}: {target}"
        assert "DESIGN.md" not in page.read_text(), f"{page.name} cites DESIGN.md, which is not shipped"


def test_screenshots_are_small_pngs() -> None:
    for name in ("landing.png", "report.png"):
        path = ROOT / "docs" / "img" / name
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(data) < 300_000, name


def test_every_make_hint_names_a_real_target() -> None:
    targets = make_targets()
    sources = [*PAGES, *sorted((ROOT / "scripts").glob("*")), ROOT / ".ci" / "run", ROOT / "Makefile"]
    for path in sources:
        # Commands, not prose ("make room"): in backticks or quotes, or a line of a fenced code block.
        text = path.read_text()
        code = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S))
        names = re.findall(r"[`'\"]make ([a-z][a-z-]*)\b", text) + re.findall(
            r"^make ([a-z][a-z-]*)\b", code, re.M
        )
        for name in names:
            assert name in targets, f"{path.relative_to(ROOT)} names `make {name}`, which does not exist"


def test_make_help_lists_every_target_with_a_description() -> None:
    make = shutil.which("make")
    assert make, "make is needed"
    out = subprocess.run(
        [make, "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed = dict(re.findall(r"^  make (\S+) +(\S.*)$", out, re.M))
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert phony is not None
    assert set(phony.group(1).split()) == set(listed)
    default = subprocess.run(
        [make, "--no-print-directory"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert default == out, "plain `make` shows the help"


def test_make_run_binds_where_the_readme_says() -> None:
    make = shutil.which("make")
    assert make
    dry = subprocess.run(
        [make, "-n", "run", "BIN=/x"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    ).stdout
    assert "--web.listen-address=127.0.0.1:9877" in dry
    assert "http://localhost:9877" in README.read_text()


def test_license_is_the_apache_license_pyproject_names() -> None:
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000


def test_ci_installs_every_test_prerequisite_the_docs_list() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    installed = dict(
        re.findall(r"([a-z][a-z0-9-]*):([a-z][a-z0-9.-]*)", ci.split("for pair in", 1)[1].split("; do", 1)[0])
    )
    section = (ROOT / "docs" / "development.md").read_text().split("## Test prerequisites", 1)[1]
    rows = re.findall(r"^\| (`.*?`) \| `([a-z0-9.-]+)` \|", section, re.M)
    assert rows, "docs/development.md lists no prerequisites"
    for programs, package in rows:
        for program in re.findall(r"`([^`]+)`", programs):
            assert installed.get(program) == package, f".ci/run does not install {program} ({package})"
    # And every program the tests look up is in that list.
    listed = {p for programs, _ in rows for p in re.findall(r"`([^`]+)`", programs)}
    looked_up: set[str] = set()
    for test in (ROOT / "tests").glob("*.py"):
        looked_up |= set(re.findall(r'shutil\.which\("([a-z][a-z0-9-]*)"\)', test.read_text()))
        looked_up |= set(re.findall(r'binary\("([a-z][a-z0-9-]*)"', test.read_text()))
    pip_or_system = {"git", "make", "hadolint", "chromium-browser", "alertmanager"}
    assert looked_up - pip_or_system <= listed, looked_up - pip_or_system - listed
