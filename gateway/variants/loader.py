"""Loading each variant's model from the MLflow registry into memory, with a local cache.

The cache lets a restarted gateway serve while MLflow is down: a model version is immutable, so a
copy downloaded once is as good as the original. An alias (``@challenger``) is re-resolved whenever
MLflow can be reached; offline, the last resolution is used and a warning says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

from gateway.config.settings import ModelSection, VariantSpec
from gateway.domain.contract import EXAMPLE_LABELS, is_http_uri
from gateway.domain.errors import ModelLoadError, NoProbabilities, SchemaMismatch
from gateway.domain.messages import first_line
from gateway.variants.output import ModelKind, OutputDecoder, Prediction, detect_kind
from gateway.variants.schema import ModelSchema


def quiet_feature_name_warnings() -> None:
    """The gateway hands an estimator the signature's columns, by name and in order, as a frame or as
    the array it was fitted on: scikit-learn's check of feature names (a warning at every start-up's
    warm-up, for a model fitted on a frame and given an array, or the reverse) has nothing to add."""
    warnings.filterwarnings("ignore", message=r"X (does not have valid|has) feature names", category=UserWarning)


quiet_feature_name_warnings()

MAX_EXAMPLE_ROWS = 500  # of a model's logged input example, kept for /variants (the traffic tool's rows)

log = logging.getLogger("gateway.variants")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))/?$")


@dataclass(frozen=True, slots=True)
class BatchResult:
    predictions: list[Prediction]
    elapsed_ms: float  # the model call's own time, for the whole batch


@dataclass
class LoadedVariant:
    """A variant ready to answer: its spec, its in-memory model, its schema and where it came from."""

    spec: VariantSpec
    model: Any
    schema: ModelSchema
    kind: ModelKind
    decoder: OutputDecoder
    registered_name: str | None = None
    registry_version: str | None = None
    version_tags: dict[str, str] = field(default_factory=dict)
    source: str = "mlflow"  # "mlflow" | "cache" | "local"
    load_seconds: float = 0.0
    flavor: str = "sklearn"  # "sklearn": the estimator itself | "pyfunc": MLflow's generic wrapper
    input_examples: list[dict[str, Any]] = field(default_factory=list)  # validated rows of the logged example
    # Their true labels, when the model's metadata has them (EXAMPLE_LABELS): traffic --feedback sends them
    example_labels: list[Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_probabilities(self) -> bool:
        return self.proba_model is not None

    @functools.cached_property
    def proba_model(self) -> Any:
        """What answers predict_proba: the estimator itself, or the flavour's model under MLflow's pyfunc
        wrapper (a LightGBM or XGBoost classifier, say); None when there is none."""
        if self.kind is not ModelKind.CLASSIFIER:
            return None
        raw = raw_model(self.model)
        return raw if hasattr(raw, "predict_proba") else None

    def check_probabilities(self) -> None:
        """NoProbabilities (400) naming the model and why, when probabilities cannot be given."""
        if self.proba_model is None:
            why = ("it is a regressor" if self.kind is not ModelKind.CLASSIFIER
                   else f"its model ({self.flavor} flavour) has no predict_proba")
            raise NoProbabilities(f"variant {self.name} ({self.spec.model_uri}) cannot give probabilities: {why}",
                                  variant=self.name)

    def _model_input(self, rows: list[dict[str, Any]]) -> Any:
        names = self.schema.names
        matrix = getattr(rows, "matrix", None)  # rows that came through the columnar path (columns.py)
        if self.flavor == "sklearn" and self.schema.all_numeric and not hasattr(self.model, "feature_names_in_"):
            # The estimator was fitted on a plain array: skip building a DataFrame.
            if matrix is not None:
                return matrix
            return np.array([[np.nan if r[c] is None else r[c] for c in names] for r in rows], dtype=np.float64)
        frame = (pd.DataFrame(matrix, columns=names) if matrix is not None
                 else pd.DataFrame.from_records(rows, columns=names))
        for col in self.schema.columns:
            if col.type in ("float", "double") or (col.numeric and not col.required):
                frame[col.name] = frame[col.name].astype("float64" if col.type != "float" else "float32")
            elif col.type in ("long", "integer"):
                frame[col.name] = frame[col.name].astype("int64" if col.type == "long" else "int32")
        return frame

    def predict(self, rows: list[dict[str, Any]], probabilities: bool = False,
                params: dict[str, Any] | None = None) -> BatchResult:
        """One model call for every row; validated rows in, decoded predictions out. ``params`` (the
        scoring protocol's) go to a pyfunc model, which checks them against its own params schema."""
        data = self._model_input(rows)
        start = time.perf_counter()
        raw = self.model.predict(data, params=params) if params and self.flavor == "pyfunc" else \
            self.model.predict(data)
        proba = self.proba_model.predict_proba(data) if probabilities and self.has_probabilities else None
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        missing = unanswered_rows(raw)
        if missing:  # served as "nan" or "None" and logged as a class, it would poison the report too
            raise ValueError(f"the model answered no prediction (None, NaN or infinity) for row(s) {missing[:10]}")
        return BatchResult(self.decoder.decode(raw, len(rows), proba), elapsed_ms)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "model_uri": self.spec.model_uri,
            "weight": self.spec.weight,
            "registered_model": self.registered_name,
            "registry_version": self.registry_version,
            "version_label": self.version_tags.get("model_version"),
            "source": self.source,
            "flavor": self.flavor,
            "kind": str(self.kind),
            "load_seconds": round(self.load_seconds, 3),
        }


def raw_model(model: Any) -> Any:
    """The flavour's own model under MLflow's pyfunc wrapper (a LightGBM or XGBoost estimator, ...),
    or the model itself (an estimator, or a custom PythonModel's wrapper, which has none)."""
    if hasattr(model, "predict_proba") or not hasattr(model, "get_raw_model"):
        return model
    try:
        return model.get_raw_model()
    except Exception:  # NotImplementedError: the wrapper has no raw model to give
        return model


def unanswered_rows(raw: Any) -> list[int]:
    """The rows a model's raw output has no answer for: None, NaN or an infinity."""
    values = (raw.to_numpy() if hasattr(raw, "to_numpy") else raw if isinstance(raw, np.ndarray)
              else np.asarray(raw, dtype=object))
    values = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values.reshape(-1)
    if values.dtype.kind in "fc":
        return [int(i) for i in np.flatnonzero(~np.isfinite(values))]
    if values.dtype.kind != "O":
        return []
    return [i for i, v in enumerate(values)
            if v is None or (isinstance(v, float | np.floating) and not math.isfinite(v))]


def check_tracking_server(tracking_uri: str, timeout: float = 3.0) -> str | None:
    """Return None when the server answers its health check, else a short reason."""
    if not is_http_uri(tracking_uri):
        return None
    try:
        resp = httpx.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if resp.status_code != 200:
        return f"HTTP {resp.status_code} from /health"
    return None


class ModelLoader:
    """Resolves a variant's URI against the registry, caches the artifacts, and loads the model."""

    def __init__(self, tracking_uri: str, cache_dir: Path, model: ModelSection | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.model_config = model or ModelSection()
        self._server_problem: str | bool | None = False  # False: not checked yet

    def _server_down(self) -> str | None:
        if self._server_problem is False:
            self._server_problem = check_tracking_server(self.tracking_uri)
        return self._server_problem  # type: ignore[return-value]

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _uri_cache(self, uri: str) -> Path:
        digest = hashlib.sha256(f"{self.tracking_uri}|{uri}".encode()).hexdigest()[:16]
        return self.cache_dir / digest

    def resolve(self, spec: VariantSpec) -> tuple[str | None, str | None, dict[str, str]]:
        match = _MODELS_URI.match(spec.model_uri)
        if not match:
            return None, None, {}
        client = self._client()
        name = match["name"]
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        elif match["ref"].isdigit():
            mv = client.get_model_version(name, match["ref"])
        elif match["ref"].lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelLoadError(f"registered model {name!r} has no versions")
            mv = max(versions, key=lambda v: int(v.version))
        else:  # a legacy stage name such as Production
            versions = client.get_latest_versions(name, stages=[match["ref"]])
            if not versions:
                raise ModelLoadError(f"registered model {name!r} has no version in stage {match['ref']!r}")
            mv = versions[0]
        return name, str(mv.version), dict(mv.tags or {})

    def load(self, spec: VariantSpec) -> LoadedVariant:
        start = time.perf_counter()
        local = _local_path(spec.model_uri)
        variant = (self._load_local(spec, local, source="local") if local is not None
                   else self._load_remote(spec))
        variant.load_seconds = time.perf_counter() - start
        return variant

    def _load_local(self, spec: VariantSpec, path: Path, source: str,
                    meta: dict[str, Any] | None = None) -> LoadedVariant:
        meta = meta or {}
        if not (path / "MLmodel").exists():
            raise ModelLoadError(f"cannot load {spec.model_uri} for variant {spec.name}: no MLmodel in {path}")
        # MLflow refuses to deserialise any sklearn model (skops included) unless told the source is
        # trusted. The gateway loads only what its own config names from its own registry.
        os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        from mlflow.models import Model

        try:
            info = Model.load(str(path / "MLmodel"))
            schema = ModelSchema.from_signature(info.signature, spec.model_uri)
            if "sklearn" in info.flavors:
                import mlflow.sklearn

                model, flavor = mlflow.sklearn.load_model(str(path)), "sklearn"
            else:
                import mlflow.pyfunc

                model, flavor = mlflow.pyfunc.load_model(str(path)), "pyfunc"
        except SchemaMismatch:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load {spec.model_uri} for variant {spec.name} from {path}: {first_line(exc)}"
            ) from None
        cfg = self.model_config
        kind = ModelKind(cfg.kind) if cfg.kind != "auto" else detect_kind(model, info.signature, spec.model_uri)
        class_names = cfg.class_names or list((info.metadata or {}).get("class_names") or [])
        classes = getattr(raw_model(model), "classes_", None) if kind is ModelKind.CLASSIFIER else None
        variant = LoadedVariant(
            spec=spec, model=model, schema=schema, kind=kind, decoder=OutputDecoder(kind, class_names, classes),
            registered_name=meta.get("registered_model"), registry_version=meta.get("registry_version"),
            version_tags=meta.get("version_tags", {}), source=source, flavor=flavor,
        )
        self._warm_up(variant, info, path)
        return variant

    def _warm_up(self, variant: LoadedVariant, info: Any, path: Path) -> None:
        """Predict once, with the model's own input example if it has one: proof that it answers."""
        rows: list[dict[str, Any]] | None = None
        try:
            example = info.load_input_example(str(path))
            if example is not None and hasattr(example, "to_dict"):
                rows = variant.schema.validate_rows(example.head(MAX_EXAMPLE_ROWS).to_dict("records"))
                labels = (info.metadata or {}).get(EXAMPLE_LABELS)
                if isinstance(labels, list) and len(labels) >= len(rows):
                    variant.example_labels = labels[:len(rows)]
        except Exception as exc:  # an example that no longer validates is not the model's fault
            log.debug("input example of %s not usable: %s", variant.spec.model_uri, first_line(exc))
        own_example = rows is not None
        rows = rows or [variant.schema.example_row()]
        variant.input_examples = rows
        try:
            variant.predict(rows[:1])
        except Exception as exc:
            if own_example:
                raise ModelLoadError(f"model {variant.spec.model_uri} for variant {variant.spec.name} loaded but "
                                     f"cannot predict its own input example: {first_line(exc)}") from None
            log.warning("variant %s: a made-up warm-up row failed (%s); the model has no input example",
                        variant.spec.name, first_line(exc))

    def _load_remote(self, spec: VariantSpec) -> LoadedVariant:
        cache = self._uri_cache(spec.model_uri)
        meta_path = cache / "meta.json"
        problem = self._server_down()
        if problem is not None:
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                log.warning(
                    "MLflow at %s is unreachable (%s); serving %s from the local cache (registry version %s)",
                    self.tracking_uri, problem, spec.model_uri, meta.get("registry_version"),
                )
                return self._load_local(spec, cache / "model", source="cache", meta=meta)
            raise ModelLoadError(
                f"cannot load {spec.model_uri} for variant {spec.name}: MLflow tracking server "
                f"{self.tracking_uri} is unreachable ({problem}) and no cached copy exists"
            )
        try:
            name, version, tags = self.resolve(spec)
        except Exception as exc:
            problem = first_line(exc)
            if meta_path.exists() and self.model_config.allow_cached:
                meta = json.loads(meta_path.read_text())
                log.warning("%s for variant %s is not in MLflow's registry any more (%s); serving the cached "
                            "copy (registry version %s, [model] allow_cached = true)", spec.model_uri, spec.name,
                            problem, meta.get("registry_version"))
                return self._load_local(spec, cache / "model", source="cache", meta=meta)
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(
                f"cannot load {spec.model_uri} for variant {spec.name} from MLflow at {self.tracking_uri}: "
                f"{problem}" + (" (a cached copy exists: [model] allow_cached = true serves it)"
                                if meta_path.exists() else "")
            ) from None
        meta = {"model_uri": spec.model_uri, "registered_model": name, "registry_version": version,
                "version_tags": tags, "downloaded_at": time.time()}
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if version is not None and old.get("registry_version") == version:
                return self._load_local(spec, cache / "model", source="cache", meta=meta)
        download_uri = f"models:/{name}/{version}" if name and version else spec.model_uri
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_dir))
        try:
            import mlflow
            import mlflow.artifacts

            # models:/ URIs are resolved through the process-wide registry URI, which would
            # otherwise default to a local ./mlflow.db.
            mlflow.set_registry_uri(self.tracking_uri)
            mlflow.set_tracking_uri(self.tracking_uri)
            (tmp / "download").mkdir()
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=download_uri, dst_path=str(tmp / "download"), tracking_uri=self.tracking_uri
            )
            model_dir = _find_mlmodel_dir(Path(path))
            # Swap in atomically so a crash mid-download never leaves a half cache behind.
            staged = tmp / "staged"
            staged.mkdir()
            shutil.move(str(model_dir), staged / "model")
            (staged / "meta.json").write_text(json.dumps(meta, indent=2))
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(staged, cache)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot download {spec.model_uri} for variant {spec.name} from MLflow at "
                f"{self.tracking_uri}: {first_line(exc)}"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._load_local(spec, cache / "model", source="mlflow", meta=meta)


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(urlparse(uri).path)
    if uri.startswith(("/", "./")):
        return Path(uri)
    return None


def _find_mlmodel_dir(root: Path) -> Path:
    if (root / "MLmodel").exists():
        return root
    for candidate in root.rglob("MLmodel"):
        return candidate.parent
    raise ModelLoadError(f"no MLmodel file in the artifacts downloaded to {root}")
