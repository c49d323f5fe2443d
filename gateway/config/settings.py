"""Gateway settings: one TOML file, overridden by environment variables, validated at start-up.

Precedence, highest first: ``MLFLOW_TRACKING_URI`` (for ``mlflow.tracking_uri`` only),
``GATEWAY_<SECTION>__<KEY>`` environment variables, the TOML file, the defaults below.
"""

from __future__ import annotations

import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.bandit.spec import BanditSection, check_bandit
from gateway.config.checks import ENV_PREFIX, disabled_sections, unknown_environment, weights_notice
from gateway.delta.spec import TableSection
from gateway.domain.contract import is_http_uri
from gateway.domain.messages import error_location
from gateway.domain.validation import Section
from gateway.rollout.spec import RolloutSection
from gateway.routing.spec import RoutingConfig, RoutingMode, ShadowSection, starting_config, validate_routing
from gateway.security.spec import FeedbackSection
from gateway.variants.spec import ModelSection, VariantSpec

DEFAULT_CONFIG_PATH = Path("config/gateway.toml")


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class MlflowSection(Section):
    tracking_uri: str = "http://127.0.0.1:5001"
    experiment: str = "iris-flower-prediction"
    granularity: Literal["prediction", "window"] = "prediction"
    window_seconds: float = Field(10.0, gt=0)
    window_max_records: int = Field(200_000, gt=0)
    # A window of at most this many records also logs one metric step per record (charts in the UI);
    # a bigger one only its summary and table: the steps would cost MLflow most of the export. 0: never.
    window_series_max_records: int = Field(1000, ge=0)
    export_workers: int = Field(8, ge=1, le=64)
    # Per-prediction export defers to traffic: above this many predictions/s it waits, unless the
    # oldest unexported prediction is older than max_deferral_seconds. 0 turns deferral off.
    busy_rps: float = Field(200.0, ge=0)
    max_deferral_seconds: float = Field(60.0, ge=0)
    # While MLflow fails, the exporter and the outbox retry after 0.5 s doubling up to this: how soon
    # after MLflow is back the backlog moves again, against how often a down server is tried.
    retry_max_seconds: float = Field(30.0, gt=0, le=600)
    model_cache_dir: Path = Path("./var/model-cache")
    # Where the report's summary runs and the routing changes go (default: the experiment's name with
    # the suffix "-comparison" or "-routing-changes", so that two gateways never share them).
    comparison_experiment: str | None = None
    routing_changes_experiment: str | None = None

    @field_validator("tracking_uri", "experiment", "comparison_experiment", "routing_changes_experiment")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def comparison(self) -> str:
        return self.comparison_experiment or comparison_experiment_of(self.experiment)

    @property
    def routing_changes(self) -> str:
        return self.routing_changes_experiment or f"{self.experiment}-routing-changes"


def comparison_experiment_of(experiment: str) -> str:
    """The report's summary experiment for a prediction experiment, unless configured."""
    return f"{experiment}-comparison"


class RoutingSection(Section):
    mode: RoutingMode = RoutingMode.WEIGHTED
    variant_header: str = "X-Model-Version"
    sticky_header: str = "X-User-ID"
    salt: str = "iris-ab"  # a secret from the environment (GATEWAY_ROUTING__SALT) in production
    reveal_version: bool = True  # false: no X-Model-Version and no model_version in answers (blind tests)
    # Request headers whose values are logged with each prediction (tag header.<name>), so that the
    # report can compare versions within their segments (--segment-by header:NAME). Values are cut
    # at 256 characters; leave out anything personal.
    log_headers: list[str] = Field(default_factory=list, max_length=10)

    @field_validator("log_headers")
    @classmethod
    def _header_names(cls, names: list[str]) -> list[str]:
        out = []
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", name):
                raise ValueError(f"{name!r} is not a header name (letters, digits and -, at most 64)")
            out.append(name.lower())
        return out


class HttpSection(Section):
    """Limits on what a client controls (docs/protocols.md, the status table)."""

    max_body_mb: float = Field(16.0, gt=0, le=4096)  # 413 past it
    max_header_kb: float = Field(16.0, gt=0, le=1024)  # 431 past it, all headers together
    body_read_timeout_seconds: float = Field(30.0, gt=0)  # 408 when a body stalls this long
    limit_concurrency: int = Field(1000, ge=1)  # open connections + tasks; past it uvicorn answers 503
    timeout_keep_alive: float = Field(5.0, gt=0)  # idle keep-alive connections close after this


class GrpcSection(Section):
    """The Open Inference Protocol over gRPC (docs/protocols.md, "gRPC"): off unless ``port`` is set.
    Its messages are held to the HTTP limits: ``[http] max_body_mb`` per message, ``[model] max_rows``
    and ``request_timeout_ms`` (or the client's own deadline, when sooner)."""

    port: int | None = Field(None, ge=1, le=65535)  # None: no gRPC server
    host: str = Field("127.0.0.1", min_length=1)  # 0.0.0.0 in a container


class BatchingSection(Section):
    """Adaptive micro-batching per variant (docs/configuration.md, "Batching")."""

    max_batch_size: int = Field(1024, ge=1, le=100_000)  # rows per model call; 1 turns batching off
    max_batch_delay_ms: float = Field(0.0, ge=0, le=1000)  # wait this long for more rows; 0: never wait
    # Rows that may wait for one variant; past it a request gets 503 with Retry-After at once, and
    # /readyz says the variant is saturated. (A request larger than this still goes when none waits.)
    max_queue_rows: int = Field(10_000, ge=1, le=10_000_000)


class SpoolSection(Section):
    enabled: bool = True           # false: no prediction log at all (benchmark baseline only)
    dir: Path = Path("./var/spool")
    fsync: Literal["normal", "full"] = "normal"
    # Past this the spool counts as full (exported rows are pruned first): a backlog that cannot drain
    # ends in 503s, not in a full disk. 0: no cap.
    max_size_mb: float = Field(4096.0, ge=0)
    # New records are refused (on_log_failure) while the spool's disk has less than this free: the
    # exporter keeps room to mark rows exported and prune them, so a full disk drains. 0: no reserve.
    min_free_mb: float = Field(32.0, ge=0)
    retention_hours: float = Field(24.0, ge=0)
    on_log_failure: Literal["reject", "serve"] = "reject"
    export: bool = True
    exporter: Literal["process", "thread"] = "process"  # a niced child process, or threads in the gateway
    exporter_nice: int = Field(10, ge=0, le=19)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    # A request whose records wait longer than this for the spool's writer thread (the spool locked by
    # another process, a stalled disk) follows on_log_failure; other requests go on.
    write_timeout_ms: float = Field(2000.0, gt=0, le=600_000)


class StateBackend(StrEnum):
    LOCAL = "local"  # a file next to the spool: every worker of one gateway
    MLFLOW = "mlflow"  # the tracking server's Model Registry: every replica


class StateSection(Section):
    """Where the routing and rollout state is shared: ``local``, a file next to the spool (every
    worker of one gateway), or ``mlflow``, the tracking server's Model Registry (every replica)."""

    backend: StateBackend = StateBackend.LOCAL
    registered_model: str = Field("gateway-routing-state", min_length=1, max_length=256)
    poll_seconds: float = Field(1.0, gt=0, le=5)  # a change reaches every replica within this
    timeout_seconds: float = Field(5.0, gt=0, le=60)  # per request to MLflow
    # A replica that starts while MLflow is down: "last_read" serves the shared state it last read (a
    # local copy next to the spool; the config file's routing if it has none), "unready" answers
    # /readyz 503 until it has read the shared state.
    start_without_mlflow: Literal["last_read", "unready"] = "last_read"


class ControllerSection(Section):
    """``python -m gateway.rollout``: the one rollout controller for every replica (state.backend =
    mlflow). It sums the replicas' counts from Prometheus and serves its own /metrics."""

    prometheus_url: str = "http://127.0.0.1:9090"
    metrics_port: int = Field(9108, ge=0, le=65535)  # 0: no /metrics
    metrics_host: str = "0.0.0.0"
    query_timeout_seconds: float = Field(5.0, gt=0, le=60)
    accuracy_refresh_seconds: float = Field(10.0, gt=0, le=3600)  # how often accuracy is read from MLflow


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    mlflow: MlflowSection = MlflowSection()
    routing: RoutingSection = RoutingSection()
    variants: list[VariantSpec] = Field(
        default_factory=lambda: [
            VariantSpec(name="v1.0", model_uri="models:/IrisClassifier/1", weight=0.5),
            VariantSpec(name="v2.0", model_uri="models:/IrisClassifier/2", weight=0.5),
        ]
    )
    shadow: ShadowSection = ShadowSection()
    spool: SpoolSection = SpoolSection()
    model: ModelSection = ModelSection()
    http: HttpSection = HttpSection()
    grpc: GrpcSection = GrpcSection()
    batching: BatchingSection = BatchingSection()
    rollout: RolloutSection = RolloutSection()
    state: StateSection = StateSection()
    controller: ControllerSection = ControllerSection()
    bandit: BanditSection = BanditSection()
    feedback: FeedbackSection = FeedbackSection()
    table: TableSection = TableSection()
    _notices: list[str] = PrivateAttr(default_factory=list)  # sections present that do nothing (start-up log)

    @property
    def notices(self) -> list[str]:
        return list(self._notices)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (see load_settings); environment must beat it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        validate_routing(self.routing.mode, self.variants, self.shadow)
        if self.table.enabled and self.mlflow.granularity != "window":
            raise ValueError("table.enabled: the inference table takes windows; set mlflow.granularity = \"window\" "
                             "(per-prediction runs keep the seed's schema and carry their rows themselves)")
        if self.state.backend == StateBackend.MLFLOW and not is_http_uri(self.mlflow.tracking_uri):
            raise ValueError(f"state.backend: 'mlflow' needs an http(s) tracking server; mlflow.tracking_uri is "
                             f"{self.mlflow.tracking_uri!r}")
        if self.routing.mode == RoutingMode.BANDIT:
            check_bandit(self.bandit, [v.name for v in self.variants], self.model.kind)
            if self.state.backend == StateBackend.MLFLOW and self.bandit.reward != "correct":
                raise ValueError("bandit.reward: replicas (state.backend = \"mlflow\") reweigh from the labels in "
                                 "MLflow, read as correct/incorrect: only reward = \"correct\" is built for them")
            if not self.spool.enabled:
                raise ValueError("routing.mode: \"bandit\" learns from the labels kept in the spool; "
                                 "spool.enabled = false leaves it nothing to learn from")
            if self.rollout.enabled:
                raise ValueError("rollout.enabled: a rollout moves the weights itself; it cannot run under "
                                 "routing.mode = \"bandit\"")
        if self.rollout.enabled:
            try:
                self.rollout.check_variants([v.name for v in self.variants])
            except ValueError as exc:
                raise ValueError(f"rollout.{exc}") from None
        return self

    def routing_config(self) -> RoutingConfig:
        return starting_config(self.routing.mode, self.variants, self.shadow, self.routing.salt)


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = error_location(err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        # Cross-field errors already start with their key ("shadow.primary: ...").
        parts.append(msg if key == "config" or ": " in msg.split(" ")[0] else f"{key}: {msg}")
    return "; ".join(parts)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply the environment, validate; raise ConfigError on any problem."""
    unknown = unknown_environment(set(Settings.model_fields))
    if unknown:
        names = ", ".join(unknown)
        raise ConfigError(f"environment variable(s) {names} name no setting (GATEWAY_<SECTION>__<KEY>, sections: "
                          f"{', '.join(Settings.model_fields)})")
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in overrides.items():
        data[key] = value
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        data.setdefault("mlflow", {})
        data["mlflow"] = {**data["mlflow"], "tracking_uri": env_uri}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config ({path or 'defaults'}): {_format_validation_error(exc)}") from exc
    if env_uri:
        # An explicit MLFLOW_TRACKING_URI beats GATEWAY_MLFLOW__TRACKING_URI too.
        settings.mlflow.tracking_uri = env_uri
    settings._notices = disabled_sections(data, ShadowSection().model_dump()) + weights_notice(
        settings.routing.mode, [(v.name, v.weight) for v in settings.variants])
    return settings
