"""The seed's iris rows and the shipped config's [model] section, as the tests send and expect them."""

from __future__ import annotations

FEATURES = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
SEED_FORM = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# The shipped config's [model] section: class names and the (0, 100] bounds of every measurement.
IRIS_MODEL = {"class_names": ["Setosa", "Versicolor", "Virginica"],
              "bounds": {name: {"gt": 0, "le": 100} for name in FEATURES}}
