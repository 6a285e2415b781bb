"""The Prometheus files in deploy/prometheus/: valid for promtool, their unit tests pass, and
the rules use only the metrics `postsave metrics` exports.

promtool comes with Debian's `prometheus` package. Without it the promtool tests skip, except
under CI=true, where they fail: CI installs it, so a skip there would hide a broken rule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork
from infrastructure.ops.metrics import OutboxCollector

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "postsave-alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "postsave-alerts.test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
README = PROMETHEUS_DIR / "README.md"

IN_CI = os.environ.get("CI", "").lower() == "true"


def exported() -> tuple[set[str], set[str]]:
    """The sample names `postsave metrics` serves (here from an empty in-memory database: it
    serves the same names whatever the database holds), and the values of their state label."""
    database = InMemoryDatabase()
    collector = OutboxCollector(lambda: InMemoryUnitOfWork(database))
    samples = [sample for family in collector.collect() for sample in family.samples]
    states = {sample.labels["state"] for sample in samples if "state" in sample.labels}
    return {sample.name for sample in samples}, states


EXPORTED, STATES = exported()
METRICS = EXPORTED | {"up"}  # `up` is Prometheus' own
LABELS = {"job", "instance", "state"}
# The PromQL functions, aggregations and keywords the rules use; a new one goes here.
PROMQL_WORDS = {
    "absent",
    "and",
    "by",
    "ignoring",
    "max",
    "min",
    "on",
    "or",
    "rate",
    "increase",
    "sum",
    "unless",
    "without",
}


def promtool_path() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{message}: CI=true, so the rule tests must run, not skip", pytrace=False)
        pytest.skip(message)
    return path


def promtool(*args: str) -> None:
    """Run promtool from the repository root, as the README shows; fail with its output."""
    result = subprocess.run(
        [promtool_path(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_promtool_check_rules() -> None:
    promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_promtool_check_config_finds_the_rules_next_to_it() -> None:
    # prometheus.yml names its rule file relative to its own directory, not to the working
    # directory (the repository root here): the check loads and checks that file too.
    promtool("check", "config", str(CONFIG.relative_to(ROOT)))


# --- the files read as text: PyYAML is not a dependency -------------------------------------


def rule_expressions(text: str) -> list[str]:
    """Every `expr:` of a rules file, inline or as a block scalar (`expr: |`)."""
    lines = text.splitlines()
    expressions = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(?:- )?expr:\s*(.*)$", line)
        if match is None:
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value and value[0] not in "|>":
            expressions.append(value.strip("'\""))
            continue
        block = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        expressions.append(" ".join(part for part in block if part))
    return expressions


def alert_sections(text: str) -> dict[str, str]:
    """Each alert's name and its text up to the next alert (or the end)."""
    starts = list(re.finditer(r"^\s*- alert:\s*(\S+)\s*$", text, re.MULTILINE))
    ends = [match.start() for match in starts[1:]] + [len(text)]
    return {
        match.group(1): text[match.end() : end] for match, end in zip(starts, ends, strict=True)
    }


def words_of(expression: str) -> set[str]:
    """The identifiers of a PromQL expression, without strings, durations and numbers."""
    bare = re.sub(r'"[^"]*"', "", expression)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))


def test_the_file_readers_see_every_rule() -> None:
    text = RULES.read_text()
    assert len(rule_expressions(text)) == text.count("expr:")
    assert len(alert_sections(text)) == text.count("- alert:") > 0


def test_rules_use_only_metrics_postsave_exports() -> None:
    expressions = rule_expressions(RULES.read_text())
    unknown = set()
    for expression in expressions:
        unknown |= words_of(expression) - METRICS - LABELS - PROMQL_WORDS
    assert not unknown, (
        f"not a metric of `postsave metrics` (nor a known label or PromQL word): {sorted(unknown)}"
    )
    states = set()
    for expression in expressions:
        states |= set(re.findall(r'state\s*=~?\s*"([^"]*)"', expression))
    assert states <= STATES, f"unknown state label values: {sorted(states - STATES)}"


def test_the_metric_check_catches_a_typo() -> None:
    typo = 'max without (instance) (postsave_outbox_event{state="dead"}) > 0'
    assert words_of(typo) - METRICS - LABELS - PROMQL_WORDS == {"postsave_outbox_event"}


def test_every_alert_has_a_severity_a_for_and_annotations() -> None:
    for name, section in alert_sections(RULES.read_text()).items():
        assert re.search(r"^\s*severity:\s*(critical|warning)\s*$", section, re.MULTILINE), name
        assert re.search(r"^\s*for:\s*\d+[smh]\s*$", section, re.MULTILINE), name
        assert re.search(r"^\s*summary:", section, re.MULTILINE), name
        assert re.search(r"^\s*description:", section, re.MULTILINE), name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = set(alert_sections(RULES.read_text()))
    tests = RULE_TESTS.read_text()
    # Both styles of the test file: `{..., alertname: X, exp_alerts: []}` and the block form
    # with `alertname: X` and then `exp_alerts:` on the next line.
    cases = re.findall(r"alertname:\s*(\w+)[\s,]*exp_alerts:\s*(\[\s*\])?", tests)
    assert len(cases) == tests.count("alertname:"), (
        "every alertname: in the test file must be followed directly by its exp_alerts:"
    )
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert not (firing | quiet) - alerts, f"tests of unknown alerts: {(firing | quiet) - alerts}"
    assert alerts <= firing, f"never tested firing: {sorted(alerts - firing)}"
    assert alerts <= quiet, f"never tested staying quiet: {sorted(alerts - quiet)}"


def test_the_readme_explains_every_alert() -> None:
    readme = README.read_text()
    missing = [name for name in alert_sections(RULES.read_text()) if f"`{name}`" not in readme]
    assert not missing, f"alerts missing from {README.relative_to(ROOT)}: {missing}"


def test_the_exporter_serves_what_the_rules_watch() -> None:
    assert {
        "postsave_outbox_events",
        "postsave_parts",
        "postsave_projection_lag_seconds",
        "postsave_database_up",
    } <= EXPORTED
    assert {"pending", "in_flight", "dead", "ready"} <= STATES


def test_the_readme_lists_every_metric_the_exporter_serves() -> None:
    readme = README.read_text()
    missing = sorted(name for name in EXPORTED if f"| `{name}" not in readme)
    assert not missing, f"metrics missing from {README.relative_to(ROOT)}: {missing}"
