"""docs/extending.md, followed step by step: each marked block is applied to a copy of
postsave, the copy passes the type checker and the linter, and the guide's last block runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "extending.md"
PACKAGES = ("domain", "infrastructure", "tasks", "migrations")
# A marker comment, then a fenced block: `<!-- apply: append to F -->`, `<!-- apply: edit F -->`
# (a diff whose - lines become its + lines) or `<!-- run -->`.
STEP = re.compile(r"<!-- (apply: (append to|edit) (\S+)|run) -->\n```(\w+)\n(.*?)```", re.S)


def steps() -> list[re.Match[str]]:
    return list(STEP.finditer(GUIDE.read_text()))


def apply_edit(path: Path, diff: str) -> None:
    lines = diff.splitlines()
    before = "\n".join(line[1:] for line in lines if line.startswith("-")) + "\n"
    after = "\n".join(line[1:] for line in lines if line.startswith("+")) + "\n"
    text = path.read_text()
    assert text.count(before) == 1, f"{path.name} no longer has the line the guide edits:\n{before}"
    path.write_text(text.replace(before, after))


def test_every_code_block_of_the_guide_is_a_step_the_test_follows() -> None:
    fences = GUIDE.read_text().count("```") // 2
    assert fences == len(steps()) >= 5


def test_following_the_guide_adds_an_event_type_that_flows_end_to_end(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    script = None
    for step in steps():
        _, mode, file, language, body = step.groups()
        if mode == "append to":
            with (tmp_path / file).open("a") as target:
                target.write("\n\n" + body)
        elif mode == "edit":
            assert language == "diff"
            apply_edit(tmp_path / file, body)
        else:
            script = body
    assert script is not None

    bin_dir = Path(sys.executable).parent
    for tool in (["mypy", "domain"], ["ruff", "check", "domain"]):
        checked = subprocess.run(
            [str(bin_dir / tool[0]), *tool[1:]], cwd=tmp_path, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["[(1, 'FooCompleted'), (2, 'FooToppedUp')]", "30"]
