
from pipeline.evaluation.metrics import cirr_summary, fashioniq_summary


def test_fashioniq_summary_schema():
    summary = fashioniq_summary({"dress": {10: 20.0, 50: 40.0}, "shirt": {10: 30.0, 50: 60.0},
                                 "toptee": {10: 10.0, 50: 50.0}})
    assert summary["dress"] == {"R@10": 20.0, "R@50": 40.0}
    assert summary["average"] == {"R@10": 20.0, "R@50": 50.0, "mean": 35.0}
    assert set(summary) == {"dress", "shirt", "toptee", "average"}


def test_cirr_summary_schema_and_headline():
    summary = cirr_summary({1: 30.0, 5: 60.0, 10: 70.0, 50: 90.0}, {1: 50.0, 2: 75.0, 3: 90.0})
    assert list(summary) == ["R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "mean"]
    assert summary["mean"] == 55.0
