"""What the command line says about settings: --help names every key, its default and its
environment variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_help_names_the_environment_overrides_and_every_default() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, check=True).stdout
    assert "GATEWAY_<SECTION>__<KEY>" in out and "MLFLOW_TRACKING_URI" in out and "env GATEWAY_PORT" in out
    assert 'mlflow.granularity = "prediction"   (GATEWAY_MLFLOW__GRANULARITY)' in out
    assert "batching.max_batch_size = 1024   (GATEWAY_BATCHING__MAX_BATCH_SIZE)" in out
    for section, field in Settings.model_fields.items():
        if section != "variants":
            for key in type(field.default).model_fields:
                assert f"  {section}.{key} = " in out, (section, key)
