"""docs/extending.md, followed step by step on a copy of postsave: each marked block is applied
in turn; at each script the copy passes the type checker and the linter, and the script runs
and prints what the guide shows under it. Then the guide's migration downgrades and upgrades."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from infrastructure.sql.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "extending.md"
PACKAGES = ("domain", "infrastructure", "tasks", "migrations")
BIN = Path(sys.executable).parent
# A marker comment, then a fenced block: `<!-- apply: append to F -->`, `<!-- apply: create F -->`
# (a new file), `<!-- apply: edit F -->` (a diff whose - lines become its + lines),
# `<!-- run -->` (a script) or `<!-- output -->` (what the script before it prints).
STEP = re.compile(
    r"<!-- (?:apply: (append to|create|edit) (\S+)|(run|output)) -->\n```(\w+)\n(.*?)```", re.S
)
CHECKS = (
    ["mypy", "domain", "infrastructure/sql/bar_table.py"],
    ["ruff", "check", "domain", "infrastructure", "migrations"],
    ["ruff", "format", "--check", "domain", "infrastructure", "migrations"],
)
MIGRATION_ROUND_TRIP = """
from alembic import command
from alembic.script import ScriptDirectory
from infrastructure.sql.migrate import alembic_config, downgrade, upgrade

url = "sqlite:///var/round_trip.db"
config = alembic_config(url)
script = ScriptDirectory.from_config(config)
[head] = script.get_heads()
before = script.get_revision(head).down_revision
upgrade(url)
command.check(config)
downgrade(url, before)
upgrade(url)
command.check(config)
print(head, before)
"""


def steps() -> list[re.Match[str]]:
    return list(STEP.finditer(GUIDE.read_text()))


def apply_edit(path: Path, diff: str) -> None:
    lines = diff.splitlines()
    before = "\n".join(line[1:] for line in lines if line.startswith("-")) + "\n"
    after = "\n".join(line[1:] for line in lines if line.startswith("+")) + "\n"
    text = path.read_text()
    assert text.count(before) == 1, f"{path.name} no longer has what the guide edits:\n{before}"
    path.write_text(text.replace(before, after))


def run_python(copy: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=copy,
        env={"PYTHONPATH": str(copy), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_and_run(copy: Path, script: str, output: str) -> None:
    for tool, *args in CHECKS:
        checked = subprocess.run([str(BIN / tool), *args], cwd=copy, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = run_python(copy, script)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == output


def test_every_code_block_of_the_guide_is_a_step_the_test_follows() -> None:
    found = steps()
    fences = GUIDE.read_text().count("```") // 2
    assert fences == len(found) >= 10
    kinds = [step[3] for step in found if step[3]]
    assert kinds == ["run", "output"] * (len(kinds) // 2) and len(kinds) >= 4


def test_following_the_guide_adds_an_event_type_and_a_heavy_step_of_its_own(
    tmp_path: Path,
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    script = None
    ran = 0
    for step in steps():
        mode, file, kind, language, body = step.groups()
        if mode == "append to":
            # A blank line before an indented block (a method), two before a top-level one.
            with (tmp_path / file).open("a") as target:
                target.write("\n" + body if body.startswith(" ") else "\n\n" + body)
        elif mode == "create":
            assert not (tmp_path / file).exists(), f"{file} exists: the guide would overwrite it"
            (tmp_path / file).write_text(body)
        elif mode == "edit":
            assert language == "diff"
            apply_edit(tmp_path / file, body)
        elif kind == "run":
            script = body
        else:
            assert script is not None, "an output block follows the script that prints it"
            check_and_run(tmp_path, script, body)
            script, ran = None, ran + 1
    assert ran >= 2

    # The guide's migration follows postsave's head, and goes down to it and up again.
    round_trip = run_python(tmp_path, MIGRATION_ROUND_TRIP)
    assert round_trip.returncode == 0, round_trip.stderr
    [postsave_head] = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    head, before = round_trip.stdout.splitlines()[-1].split()
    assert before == postsave_head != head
