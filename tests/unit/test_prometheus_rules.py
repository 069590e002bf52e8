"""deploy/prometheus checked by promtool: config syntax, rule syntax, and the rules' unit tests.

promtool comes with Debian's prometheus package (scripts/setup.sh installs it). Debian builds Prometheus
without Kubernetes service discovery, so its promtool cannot parse the production prometheus.yml
(kubernetes_sd_configs); that file is checked by promtool only where promtool supports it, and always
structurally below. prometheus-local.yml (file discovery, same rules) is checked everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: run scripts/setup.sh (apt-get install prometheus)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False)


def test_rules_are_valid(promtool: str) -> None:
    result = _run(promtool, "check", "rules", *sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    tests = sorted(str(p) for p in (PROMETHEUS / "tests").glob("*.test.yml"))
    assert tests
    result = _run(promtool, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_config_is_valid(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus-local.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_config(promtool: str) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    local = yaml.safe_load((PROMETHEUS / "prometheus-local.yml").read_text())
    assert config["rule_files"] == local["rule_files"]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), rule_file
    relabels = config["scrape_configs"][0]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "target_label": "job",
    } in (relabels)
    result = _run(promtool, "check", "config", "prometheus.yml")
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        pytest.skip("this promtool is built without Kubernetes discovery (Debian); checked structurally only")
    assert result.returncode == 0, result.stdout + result.stderr
