"""Loading each variant's model from the MLflow registry into memory, with a local cache.

The cache lets a restarted gateway serve while MLflow is down: a model version is immutable, so a
copy downloaded once is as good as the original. An alias (``@challenger``) is re-resolved whenever
MLflow can be reached; offline, the last resolution is used and a warning says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from gateway.domain.contract import EXAMPLE_LABELS
from gateway.domain.errors import ModelLoadError, SchemaMismatch
from gateway.domain.messages import first_line
from gateway.mlflow import models as mlflow_models
from gateway.mlflow.client import check_tracking_server, tracking_client
from gateway.variants.loaded_variant import BatchResult, LoadedVariant, raw_model
from gateway.variants.output import ModelKind, OutputDecoder, detect_kind
from gateway.variants.schema import ModelSchema
from gateway.variants.spec import ModelSection, VariantSpec

__all__ = ["BatchResult", "LoadedVariant", "ModelLoader"]

MAX_EXAMPLE_ROWS = 500  # of a model's logged input example, kept for /variants (the traffic tool's rows)

log = logging.getLogger("gateway.variants")

_LOGGED_MODEL = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)$")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))/?$")


class Resolved(NamedTuple):
    name: str | None
    version: str | None
    tags: dict[str, str]
    run_id: str | None
    model_id: str | None  # the LoggedModel (MLflow 3) the version was registered from


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
        return tracking_client(self.tracking_uri)

    def _uri_cache(self, uri: str) -> Path:
        digest = hashlib.sha256(f"{self.tracking_uri}|{uri}".encode()).hexdigest()[:16]
        return self.cache_dir / digest

    def resolve(self, spec: VariantSpec) -> Resolved:
        """A models:/ URI's registered name, version, the version's tags, the run that logged it and the
        MLflow 3 LoggedModel it was registered from; Nones and {} for any other URI."""
        match = _MODELS_URI.match(spec.model_uri)
        if not match:
            return Resolved(None, None, {}, None, None)
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
        # The registry's REST answer leaves model_id empty; the version's source names the LoggedModel.
        logged = _LOGGED_MODEL.match(str(mv.source or ""))
        model_id = getattr(mv, "model_id", None) or (logged["id"] if logged else None)
        return Resolved(name, str(mv.version), dict(mv.tags or {}), mv.run_id or None, model_id)

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
        try:
            info = mlflow_models.model_info(path)
            schema = ModelSchema.from_signature(info.signature, spec.model_uri)
            model, flavor = mlflow_models.load(path, info)
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
            run_id=meta.get("run_id"), model_id=meta.get("model_id"),
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
            name, version, tags, run_id, model_id = self.resolve(spec)
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
                "version_tags": tags, "run_id": run_id, "model_id": model_id, "downloaded_at": time.time()}
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if version is not None and old.get("registry_version") == version:
                return self._load_local(spec, cache / "model", source="cache", meta=meta)
        download_uri = f"models:/{name}/{version}" if name and version else spec.model_uri
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_dir))
        try:
            (tmp / "download").mkdir()
            path = mlflow_models.download(self.tracking_uri, download_uri, tmp / "download")
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
