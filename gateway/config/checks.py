"""What start-up says about the configuration beyond validating it: environment variables that name
no setting (refused), and sections the file has that do nothing as configured (one line each)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "GATEWAY_"
# Environment variables with the prefix that are not settings: the command lines' own options and
# the secrets and hand-overs read where they are used. Any other GATEWAY_ name must name a setting.
ENV_NOT_SETTINGS = frozenset({
    "GATEWAY_CONFIG", "GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_LOG_LEVEL", "GATEWAY_WORKERS",  # python -m gateway
    "GATEWAY_ADMIN_TOKEN",  # gateway/http/admin.py
    "GATEWAY_FEEDBACK_TOKEN", "GATEWAY_RECEIPT_KEY", "GATEWAY_PSEUDONYM_KEY",  # gateway/security/keys.py
    "GATEWAY_EXPORT_SETTINGS",  # gateway/export/process.py: the gateway's settings for its exporter child
})


def unknown_environment(sections: set[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """``GATEWAY_`` variables that name no setting (a misspelled section such as
    GATEWAY_ROUTNG__MODE would otherwise be ignored in silence). A misspelled key inside a known
    section is refused by the section itself."""
    environ = os.environ if environ is None else environ
    unknown = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in ENV_NOT_SETTINGS:
            continue
        field = upper[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if field not in sections:
            unknown.append(name)
    return sorted(unknown)


def disabled_sections(data: Mapping[str, Any], shadow_defaults: Mapping[str, Any] | None = None) -> list[str]:
    """One line per section the file has that does nothing as configured (said at start-up). A
    ``[shadow]`` that only restates ``shadow_defaults`` (the shipped config's) configures nothing."""
    notes = []
    rollout = data.get("rollout")
    if isinstance(rollout, dict) and not rollout.get("enabled", False):
        notes.append("[rollout] is present but not enabled (enabled = true starts it at start-up); no rollout "
                     "starts until POST /admin/rollout")
    spool = data.get("spool")
    if isinstance(spool, dict) and spool.get("enabled", True) is False:
        notes.append("[spool] enabled = false: the prediction log is off; nothing is logged to MLflow")
    elif isinstance(spool, dict) and spool.get("export", True) is False:
        notes.append("[spool] export = false: predictions are kept in the spool and not exported; ship them "
                     "with python -m gateway.export")
    routing = data.get("routing") if isinstance(data.get("routing"), dict) else {}
    shadow = data.get("shadow")
    restated = isinstance(shadow, dict) and shadow_defaults is not None and all(
        shadow_defaults.get(k) == v for k, v in shadow.items())
    if isinstance(shadow, dict) and not restated and routing.get("mode", "weighted") != "shadow":
        notes.append("[shadow] is used only with routing.mode = \"shadow\" (or a rollout's disagreement "
                     "guardrail); with mode \"weighted\" it scores nothing")
    if isinstance(data.get("bandit"), dict) and routing.get("mode", "weighted") != "bandit":
        notes.append("[bandit] is used only with routing.mode = \"bandit\"; with mode "
                     f"{routing.get('mode', 'weighted')!r} the weights stay as configured")
    return notes


def weights_notice(mode: str, weights: list[tuple[str, float]]) -> list[str]:
    """Weighted routing whose weights do not add up to 1 is fine (they are shares), but says so."""
    total = sum(w for _, w in weights)
    if mode != "weighted" or total <= 0 or abs(total - 1.0) < 1e-9:
        return []
    shares = ", ".join(f"{name} {w / total:.1%}" for name, w in weights)
    return [f"the variants' weights add up to {total:g}, not 1: they are used as shares ({shares})"]


def defaults_text(sections: Mapping[str, Any]) -> str:
    """Every key with its default, one line each, for ``--help`` (``sections``: section name to its
    default value, a pydantic model or a list of them)."""
    import json

    lines = []
    for name, default in sections.items():
        if isinstance(default, list):
            lines.append(f"  {name} = {json.dumps([v.model_dump(mode='json') for v in default])}")
            continue
        for key, value in default.model_dump(mode="json").items():
            env = f"{ENV_PREFIX}{name}__{key}".upper()
            lines.append(f"  {name}.{key} = {json.dumps(value)}   ({env})")
    return "\n".join(lines)
