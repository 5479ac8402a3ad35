"""Long-format results, average ranks (known answers) and the results writer."""

from __future__ import annotations

import pandas as pd
import pytest

from tfmkit.errors import TfmkitError
from tfmkit.evaluation import report as R


def _df():
    rows = []
    for seed in (0, 1):
        for emb, a, b in (("model", 0.9, 2.0), ("pca50", 0.7, 1.0), ("raw", 0.5, 3.0)):
            rows.append({"embedding": emb, "task": "clustering", "metric": "nmi", "value": a + seed * 0.02, "seed": seed})
            rows.append({"embedding": emb, "task": "mask90", "metric": "poisson_loss", "value": b, "seed": seed})
    return pd.DataFrame(rows)


def test_aggregate_seeds_mean_std():
    agg = R.aggregate_seeds(_df())
    row = agg[(agg.embedding == "model") & (agg.metric == "nmi")].iloc[0]
    assert row.value == pytest.approx(0.91) and row["std"] == pytest.approx(0.0141421356) and row.n_seeds == 2
    assert list(agg.columns) == R.LONG_COLUMNS


def test_average_ranks_known_answer():
    ranks = R.average_ranks(_df())
    # nmi (higher better): model 1, pca50 2, raw 3; loss (lower better): pca50 1, model 2, raw 3
    assert ranks["model"] == 1.5 and ranks["pca50"] == 1.5 and ranks["raw"] == 3.0


def test_format_table_sorted_with_bold_best():
    md = R.format_table(_df(), title="T")
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert lines[0].startswith("| rank | embedding")
    assert "poisson_loss ↓" in lines[0]
    assert lines[-1].split("|")[2].strip() == "raw"
    assert "**0.910 ± 0.014**" in md and "**1.000**" in md


def test_write_results_refuses_overwrite(tmp_path):
    out = tmp_path / "res"
    paths = R.write_results(_df(), out, "Title")
    csv = pd.read_csv(paths["csv"])
    assert {"embedding", "task", "metric", "value", "std", "n_seeds"} <= set(csv.columns)
    assert paths["md"].read_text().startswith("# Title")
    with pytest.raises(TfmkitError, match=r"already exist; pass --overwrite"):
        R.write_results(_df(), out, "Title")
    R.write_results(_df(), out, "Title", overwrite=True)


def test_missing_columns_raise():
    with pytest.raises(TfmkitError, match=r"results table lacks column\(s\) \['task', 'metric'\]"):
        R.format_table(pd.DataFrame({"embedding": ["a"], "value": [1.0]}))
