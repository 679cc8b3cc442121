"""One label rule for every job (labels.py): fine-tuning and annotation read the same messy column as the same
classes, and each label problem has one code, whichever job meets it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helical_airflow.annotate import check_reference_labels, label_values
from helical_airflow.errors import ConfigError
from helical_airflow.finetune import check_labels

KEY = "cell_type"
MESSY = [" B cell", "B cell ", "B cell", "T", " T ", "T", "", "  ", "unknown", "Unknown ", np.nan, None, "nan",
         "None", "NK", "NK"]  # fmt: skip


@pytest.mark.parametrize("as_category", [False, True])
def test_both_jobs_read_a_messy_column_as_the_same_classes(as_category: bool) -> None:
    cells = [f"cell{i}" for i in range(len(MESSY))]  # obs_names: text, as in an .h5ad
    table = pd.DataFrame({KEY: pd.Series(MESSY, index=cells, dtype="category" if as_category else object)})
    finetuned = check_labels(table, KEY)
    annotated = label_values(table, KEY)
    assert list(finetuned) == list(annotated)  # cell by cell, not only the class set
    counts = check_reference_labels(table, KEY, folds=2)
    assert set(counts) == {v for v in finetuned if v is not None} == {"B cell", "T", "NK"}
    assert counts == {"B cell": 3, "T": 3, "NK": 2}
    assert int(finetuned.isna().sum()) == 8  # "", spaces, unknown (any case), NaN, None, "nan", "None"


def test_numbers_are_labels_in_both_jobs() -> None:
    table = pd.DataFrame({"leiden": [0, 1, 1, 0, np.nan, 2.0, 2]})  # cluster ids in a float column
    assert list(check_labels(table, "leiden")) == list(label_values(table, "leiden"))
    assert dict(check_reference_labels(table, "leiden", folds=2)) == {"0.0": 2, "1.0": 2, "2.0": 2}


def _codes(table: pd.DataFrame, key: str) -> tuple[str, str]:
    """The codes fine-tuning and annotation (2 folds: both need two cells a class) give `table`."""
    found = []
    for check in (lambda: check_labels(table, key), lambda: check_reference_labels(table, key, folds=2)):
        with pytest.raises(ConfigError) as caught:
            check()
        assert caught.value.hint and key in caught.value.message
        found.append(caught.value.code)
    return found[0], found[1]


def test_each_label_problem_has_one_code_in_both_jobs() -> None:
    assert _codes(pd.DataFrame({"louvain": ["a", "b"]}), KEY) == ("E701", "E701")
    assert _codes(pd.DataFrame({KEY: ["T", " T", "unknown", "", None]}), KEY) == ("E702", "E702")
    assert _codes(pd.DataFrame({KEY: ["T", "T", "B", " B", "rare", "unknown"]}), KEY) == ("E703", "E703")
    with pytest.raises(ConfigError, match=r"'rare' \(1 cells\)"):
        check_labels(pd.DataFrame({KEY: ["T", "T", "B", " B", "rare"]}), KEY)
