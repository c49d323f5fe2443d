"""Train the two iris classifiers and register them as IrisClassifier versions 1 (v1.0) and 2 (v2.0).

    python -m models.train [--tracking-uri URI] [--force]

Idempotent: when the registry already holds versions labelled v1.0 and v2.0, nothing is trained
or registered unless --force is given (which registers two new versions and moves the aliases).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from gateway.domain.contract import EXAMPLE_LABELS

REGISTERED_MODEL = "IrisClassifier"
TRAINING_EXPERIMENT = "iris-training"
SEED = 42
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["Setosa", "Versicolor", "Virginica"]

log = logging.getLogger("models.train")


@dataclass(frozen=True)
class Candidate:
    label: str  # the model_version tag, e.g. v1.0
    alias: str
    description: str

    def build(self) -> Any:
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.label == "v1.0":
            # Strongly regularised linear model: cheap and smooth, blurs Versicolor/Virginica.
            return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000, random_state=SEED))
        # Axis-aligned tree ensemble: sharper, more expensive, different decision boundary.
        # (A random forest would be as accurate but predicts one row ten times slower: it fans
        # out over its trees through joblib, about 3 ms here against 0.5 ms.)
        return GradientBoostingClassifier(n_estimators=60, max_depth=2, learning_rate=0.1, random_state=SEED)


CANDIDATES = (
    Candidate("v1.0", "champion", "Logistic regression (C=0.05) on standardised features"),
    Candidate("v2.0", "challenger", "Gradient-boosted trees, 60 stages of depth 2"),
)


def _existing_labels(client: Any) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    except MlflowException:
        return {}
    labels: dict[str, str] = {}
    for mv in versions:
        label = (mv.tags or {}).get("model_version")
        if label:
            labels.setdefault(label, str(mv.version))
    return labels


def _confusion_figure(cm: Any, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(3), CLASSES, rotation=20)
    ax.set_yticks(range(3), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(3):
        for j in range(3):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


# What a scikit-learn model logged here needs to load: mlflow's own inference would import the model in
# a subprocess to find them (16 of the 30 s a training took) and list this environment's test tools too.
REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "cloudpickle", "numpy", "pandas", "scipy")


def pip_requirements() -> list[str]:
    """REQUIREMENTS pinned to the versions installed here."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in REQUIREMENTS]


def train_and_register(tracking_uri: str, force: bool = False) -> dict[str, str]:
    """Return {label: registry version}. Trains only what is missing, or everything with force."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
    from sklearn.model_selection import train_test_split

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    existing = _existing_labels(client)
    if not force and all(c.label in existing for c in CANDIDATES):
        log.info("IrisClassifier already registered (%s); nothing to do (use --force to retrain)",
                 ", ".join(f"{k} = version {v}" for k, v in sorted(existing.items())))
        return existing

    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.3, stratify=iris.target, random_state=SEED
    )
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    result: dict[str, str] = {}
    for cand in CANDIDATES:
        if not force and cand.label in existing:
            result[cand.label] = existing[cand.label]
            continue
        model = cand.build()
        model.fit(x_train, y_train)
        y_pred = model.predict(x_test)
        metrics = {
            "accuracy": accuracy_score(y_test, y_pred),
            "precision": precision_score(y_test, y_pred, average="weighted"),
            "recall": recall_score(y_test, y_pred, average="weighted"),
            "f1": f1_score(y_test, y_pred, average="weighted"),
        }
        # The hold-out rows are the input example, their true classes in the model's metadata: the
        # traffic tool samples them and, with --feedback, sends each row's true label.
        example = pd.DataFrame(x_test, columns=FEATURES)
        signature = infer_signature(example, model.predict(x_train[:3]))
        with mlflow.start_run(run_name=f"train-{cand.label}") as run:
            params = {k: v for k, v in model.get_params(deep=True).items() if not hasattr(v, "fit")}
            mlflow.log_params({"model_version": cand.label, "estimator": type(model).__name__,
                               "seed": SEED, "test_size": 0.3, **{k: str(v)[:250] for k, v in params.items()}})
            mlflow.log_metrics(metrics)
            mlflow.set_tags({"model_version": cand.label, "description": cand.description})
            fig = _confusion_figure(confusion_matrix(y_test, y_pred), f"{cand.label}: hold-out confusion")
            mlflow.log_figure(fig, "confusion_matrix.png")
            info = mlflow.sklearn.log_model(
                model, name="iris_model", signature=signature, input_example=example,
                registered_model_name=REGISTERED_MODEL,
                # The classes are predicted as 0, 1, 2: the gateway answers with these names.
                metadata={"class_names": CLASSES, EXAMPLE_LABELS: [CLASSES[int(y)] for y in y_test]},
                pip_requirements=pip_requirements(),
                # Trees are stored as raw node arrays; this model is our own, so its type is trusted.
                skops_trusted_types=["sklearn.tree._tree.Tree"] if cand.label == "v2.0" else None,
            )
        version = str(info.registered_model_version)
        _wait_ready(client, version)
        client.set_model_version_tag(REGISTERED_MODEL, version, "model_version", cand.label)
        client.update_model_version(REGISTERED_MODEL, version, description=cand.description)
        client.set_registered_model_alias(REGISTERED_MODEL, cand.alias, version)
        result[cand.label] = version
        log.info("registered %s as %s version %s (alias %s), hold-out accuracy %.3f, run %s",
                 cand.label, REGISTERED_MODEL, version, cand.alias, metrics["accuracy"], run.info.run_id)
    return result


def _wait_ready(client: Any, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get_model_version(REGISTERED_MODEL, version).status == "READY":
            return
        time.sleep(0.2)
    raise RuntimeError(f"{REGISTERED_MODEL} version {version} did not become READY in {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001"))
    parser.add_argument("--force", action="store_true", help="retrain and register two new versions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")

    from gateway.mlflow.client import check_tracking_server

    problem = check_tracking_server(args.tracking_uri)
    if problem:
        print(f"error: MLflow tracking server {args.tracking_uri} is unreachable ({problem})", file=sys.stderr)
        return 1
    versions = train_and_register(args.tracking_uri, force=args.force)
    for label, version in sorted(versions.items()):
        print(f"{label}: models:/{REGISTERED_MODEL}/{version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
