from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    settings = load_settings(ROOT / "config" / "gateway.toml")
    assert [v.name for v in settings.variants] == ["v1.0", "v2.0"]
    assert settings.routing.variant_header == "X-Model-Version"
    assert settings.mlflow.experiment == "iris-flower-prediction"


VARIANTS = """
[[variants]]
name = "v1.0"
model_uri = "models:/IrisClassifier/1"
weight = {w1}
[[variants]]
name = "v2.0"
model_uri = "models:/IrisClassifier/2"
weight = {w2}
"""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VARIANTS.format(w1=-1, w2=1), "variants.0.weight"),
        (VARIANTS.format(w1=0, w2=0), "variants.weight"),
        ('[routing]\nmode = "canary"\n' + VARIANTS.format(w1=1, w2=1), "routing.mode"),
        ('[routing]\nmode = "shadow"\n[shadow]\nprimary = "v1.0"\ncandidate = "v3.0"\n'
         + VARIANTS.format(w1=1, w2=1), "shadow.candidate"),
        ('[routing]\nmode = "shadow"\n[shadow]\nprimary = "v2.0"\ncandidate = "v2.0"\n'
         + VARIANTS.format(w1=1, w2=1), "shadow.candidate"),
        ("[shadow]\nsample_rate = 1.5\n", "shadow.sample_rate"),
        ("[mlflow]\ngranularity = \"hourly\"\n", "mlflow.granularity"),
        ("[spool]\non_log_failure = \"ignore\"\n", "spool.on_log_failure"),
        ("[routing]\nmodee = \"weighted\"\n", "routing.modee"),
        ("[rollout]\nenabled = true\ncandidate = \"v7\"\n", "rollout.candidate"),
        ("[rollout]\nsteps = [0.5, 0.2]\n", "rollout.steps"),
        ("[rollout]\nsteps = [0.5, 2.0]\n", "rollout.steps"),
        ("[rollout.guardrails.accuracy]\nmax_drop = -0.1\n", "rollout.guardrails.accuracy.max_drop"),
        ("[rollout]\nmin_samples = 0\n", "rollout.min_samples"),
        ("[state]\nbackend = \"redis\"\n", "state.backend"),
        ("[state]\npoll_seconds = 30\n", "state.poll_seconds"),
        ("[mlflow]\ntracking_uri = \"sqlite:///m.db\"\n[state]\nbackend = \"mlflow\"\n", "state.backend"),
        ("[controller]\nmetrics_port = 70000\n", "controller.metrics_port"),
        ("[routing]\nlog_headers = [\"X Country\"]\n", "routing.log_headers"),
        ("[rollout]\nmin_samples = 500\nmax_samples = 100\n", "max_samples"),
        ("[rollout.guardrails.latency_p95]\nrequire = \"maybe\"\n", "rollout.guardrails.latency_p95.require"),
        ("[model]\nrequest_timeout_ms = -1\n", "model.request_timeout_ms"),
        ("[batching]\nmax_queue_rows = 0\n", "batching.max_queue_rows"),
        ("[state]\nstart_without_mlflow = \"maybe\"\n", "state.start_without_mlflow"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text))
    message = str(err.value)
    assert key in message and "\n" not in message


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[mlflow\n"))


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[routing]\nmode = "weighted"\n[mlflow]\ntracking_uri = "http://file:1"\n')
    monkeypatch.setenv("GATEWAY_ROUTING__MODE", "shadow")
    monkeypatch.setenv("GATEWAY_MLFLOW__TRACKING_URI", "http://env-prefixed:2")
    settings = load_settings(path)
    assert settings.routing.mode == "shadow"
    assert settings.mlflow.tracking_uri == "http://env-prefixed:2"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://standard:3")
    assert load_settings(path).mlflow.tracking_uri == "http://standard:3"


def test_config_hash_follows_routing_only(tmp_path: Path) -> None:
    a = load_settings(_write(tmp_path, VARIANTS.format(w1=0.7, w2=0.3)))
    b = load_settings(_write(tmp_path, VARIANTS.format(w1=0.6, w2=0.4)))
    c = load_settings(_write(tmp_path, VARIANTS.format(w1=0.7, w2=0.3) + '[spool]\ndir = "/elsewhere"\n'))
    assert a.routing_config().config_hash != b.routing_config().config_hash
    assert a.routing_config().config_hash == c.routing_config().config_hash


def test_cli_fails_fast_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _write(tmp_path, VARIANTS.format(w1=0, w2=0))
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "variants.weight" in lines[0], proc.stderr


def test_misspelled_section_in_environment_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ROUTNG__MODE", "shadow")
    with pytest.raises(ConfigError, match="GATEWAY_ROUTNG__MODE name no setting"):
        load_settings(ROOT / "config" / "gateway.toml")


def test_command_line_environment_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_PORT", "GATEWAY_HOST", "GATEWAY_ADMIN_TOKEN", "gateway_log_level"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("GATEWAY_ROUTING__MODE", "shadow")
    assert load_settings(ROOT / "config" / "gateway.toml").routing.mode == "shadow"


def test_every_gateway_variable_the_code_reads_is_allowed() -> None:
    """A GATEWAY_ name read anywhere in gateway/ is a setting's section or in ENV_NOT_SETTINGS: adding
    a new one without listing it would make start-up refuse it."""
    import re

    from gateway.config.checks import unknown_environment
    from gateway.config.settings import Settings

    names = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        names |= set(re.findall(r"[\"'](GATEWAY_[A-Z0-9_]+)[\"']", path.read_text()))
    assert "GATEWAY_ADMIN_TOKEN" in names
    assert unknown_environment(set(Settings.model_fields), dict.fromkeys(names, "x")) == []


@pytest.mark.parametrize(("text", "words"), [
    ("[rollout]\ncontrol = \"v1.0\"\n", "[rollout] is present but not enabled"),
    ("[spool]\nenabled = false\n", "prediction log is off"),
    ("[spool]\nexport = false\n", "not exported"),
    ("[shadow]\nsample_rate = 0.5\n", "only with routing.mode"),
])
def test_a_section_that_does_nothing_says_so(tmp_path: Path, text: str, words: str) -> None:
    notices = load_settings(_write(tmp_path, text)).notices
    assert len(notices) == 1 and words in notices[0]


def test_the_shipped_shadow_section_and_weights_that_add_to_one_are_quiet(tmp_path: Path) -> None:
    """Every default start logged "[shadow] is used only with ..." for a section that only restates
    the defaults; weights of 0.7 and 0.7 were made 0.5/0.5 without a word."""
    assert load_settings(ROOT / "config" / "gateway.toml").notices == []
    text = "[[variants]]\nname = \"a\"\nmodel_uri = \"/m/a\"\nweight = 0.7\n" \
           "[[variants]]\nname = \"b\"\nmodel_uri = \"/m/b\"\nweight = 0.7\n"
    notices = load_settings(_write(tmp_path, text)).notices
    assert notices == ["the variants' weights add up to 1.4, not 1: they are used as shares (a 50.0%, b 50.0%)"]


def test_enabled_sections_are_quiet(tmp_path: Path) -> None:
    text = "[rollout]\nenabled = true\n[routing]\nmode = \"shadow\"\n[shadow]\nsample_rate = 0.5\n"
    assert load_settings(_write(tmp_path, text)).notices == []


def test_side_experiments_follow_the_served_experiment(tmp_path: Path) -> None:
    mlflow = load_settings(_write(tmp_path, "[mlflow]\nexperiment = \"digits\"\n")).mlflow
    assert (mlflow.comparison, mlflow.routing_changes) == ("digits-comparison", "digits-routing-changes")
    named = load_settings(_write(tmp_path, "[mlflow]\ncomparison_experiment = \"cmp\"\n"
                                           "routing_changes_experiment = \"chg\"\n")).mlflow
    assert (named.comparison, named.routing_changes) == ("cmp", "chg")


def test_the_inference_table_takes_windows_only_and_a_known_store() -> None:
    from gateway.config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="granularity"):
        load_settings(None, table={"enabled": True})
    with pytest.raises(ConfigError, match="s3://"):
        load_settings(None, table={"uri": "gs://bucket/x"}, mlflow={"granularity": "window"})
    settings = load_settings(None, table={"enabled": True, "uri": "s3://lake/prefix/"},
                             mlflow={"granularity": "window"})
    assert settings.table.table_uri("predictions") == "s3://lake/prefix/predictions"
