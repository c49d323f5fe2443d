"""Train two digits classifiers (scikit-learn's 8x8 images, 64 pixel columns) and register them as
DigitsClassifier versions 1 and 2: the model of docs/own-models.md's walkthrough.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5001 .venv/bin/python docs/examples/train_digits.py

What the gateway needs from a model, and nothing iris-specific:
- a signature on a DataFrame with named columns (here pixel_0 ... pixel_63);
- an input example: the gateway warms up on it, experiments.traffic samples it;
- optionally, the true label of each example row in the model's metadata (input_example_labels):
  then ``experiments.traffic --feedback`` sends them and the report has accuracy to compare;
- a model saved with skops (MLflow 3.17's default for scikit-learn) must name the types skops does not
  trust by default (a random forest's Tree, HistGradientBoosting's TreePredictor, ...): skops lists
  them, ``skops.io.get_untrusted_types(data=skops.io.dumps(model))``, before anything is registered.

It registers nothing when both versions are there already, so a second run does not shift the
version numbers the config names.
"""

from __future__ import annotations

import mlflow
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB

NAME = "DigitsClassifier"

digits = load_digits()
columns = [f"pixel_{i}" for i in range(digits.data.shape[1])]
x = pd.DataFrame(digits.data, columns=columns)
x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, stratify=digits.target,
                                                    random_state=0)
candidates = [GaussianNB(),  # a quick baseline: the weaker one (about 84% on the hold-out set)
              RandomForestClassifier(n_estimators=30, random_state=0)]  # about 98%
existing = mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'")
if len(existing) >= len(candidates):
    print(f"{NAME} has versions {sorted(int(v.version) for v in existing)} already: nothing registered")
    raise SystemExit(0)
mlflow.set_experiment("digits-training")
for model in candidates:
    model.fit(x_train, y_train)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model)) or None  # e.g. ["sklearn.tree._tree.Tree"]
    with mlflow.start_run(run_name=type(model).__name__):
        mlflow.log_metric("accuracy", float(model.score(x_test, y_test)))
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=NAME,
            signature=infer_signature(x_train, model.predict(x_train.head(3))),
            input_example=x_test,  # the hold-out rows: what traffic samples
            metadata={"input_example_labels": [int(y) for y in y_test]},  # their true labels, for --feedback
            skops_trusted_types=trusted)
    print(f"{NAME} version {info.registered_model_version}: {type(model).__name__}, hold-out accuracy "
          f"{model.score(x_test, y_test):.3f}")
