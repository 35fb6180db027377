"""`logitlab report` / `evaluate`: the bundled sample, every input format, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from logitlab.cli import app

runner = CliRunner()


def test_report_on_bundled_sample(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "fitted temperature" in r.stdout and "ECE" in r.stdout
    d = json.loads((out / "report.json").read_text())
    assert d["n"] == 719 and d["n_classes"] == 10
    assert 0.9 < d["metrics"]["accuracy"] <= 1
    assert d["temperature"]["converged"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "http://" not in html and "https://" not in html  # self-contained


def test_json_flag_prints_only_json(tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", "--json", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert {"metrics", "calibration", "temperature", "brier_decomposition"} <= d.keys()
    b = d["brier_decomposition"]
    total = (
        b["reliability"]
        - b["resolution"]
        + b["uncertainty"]
        + b["within_bin_variance"]
        - b["within_bin_covariance"]
    )
    assert total == pytest.approx(b["brier"], rel=1e-9)


def _write(tmp_path: Path, logits: np.ndarray, labels: np.ndarray) -> Path:
    f = tmp_path / "p.npz"
    np.savez(f, logits=logits, labels=labels)
    return f


def test_formats_agree(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    np.save(tmp_path / "s.npy", z)
    np.save(tmp_path / "l.npy", y)
    torch.save({"logits": torch.from_numpy(z), "labels": torch.from_numpy(y)}, tmp_path / "p.pt")
    outs = []
    for args in (
        ["evaluate", str(_write(tmp_path, z, y)), "--json"],
        ["evaluate", str(tmp_path / "s.npy"), "--labels", str(tmp_path / "l.npy"), "--json"],
        ["evaluate", str(tmp_path / "p.pt"), "--json"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.stdout)["metrics"]["nll"])
    assert outs[0] == outs[1] == outs[2]
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.savez(tmp_path / "pp.npz", probs=p, labels=y)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "pp.npz"), "--probs", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["nll"] == pytest.approx(outs[0], rel=1e-6)


@pytest.mark.parametrize(
    ("logits", "labels", "extra", "msg"),
    [
        (np.zeros((5, 3)), np.arange(4), [], "5 rows of scores but 4 labels"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 3]), [], "not a class index"),
        (np.array([[np.nan, 0.0], [0.0, 0.0]]), np.array([0, 1]), [], "NaN"),
        (np.full((2, 2), 0.7), np.array([0, 1]), ["--probs"], "sum to 1"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), [], "empty"),
    ],
)
def test_bad_input_one_line_error_nothing_written(
    tmp_path: Path, logits: np.ndarray, labels: np.ndarray, extra: list[str], msg: str
) -> None:
    f = _write(tmp_path, logits, labels)
    out = tmp_path / "out"
    r = runner.invoke(app, ["report", str(f), "--out", str(out), *extra])
    assert r.exit_code == 2
    assert msg in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_missing_file(tmp_path: Path) -> None:
    r = runner.invoke(app, ["evaluate", str(tmp_path / "none.npz")])
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_probs_key_is_detected_and_matches_logits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((80, 3)) * 2
    y = rng.integers(0, 3, 80)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.savez(tmp_path / "p.npz", probs=p, labels=y)
    np.savez(tmp_path / "z.npz", logits=z, labels=y)
    rp = runner.invoke(app, ["evaluate", str(tmp_path / "p.npz"), "--json"])
    rz = runner.invoke(app, ["evaluate", str(tmp_path / "z.npz"), "--json"])
    assert rp.exit_code == rz.exit_code == 0, rp.output
    mp, mz = json.loads(rp.stdout)["metrics"], json.loads(rz.stdout)["metrics"]
    for k in ("nll", "accuracy", "brier", "ece"):
        assert mp[k] == pytest.approx(mz[k], rel=1e-9, abs=1e-12)


def test_failed_second_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab._outputs

    real = logitlab._outputs._write_synced

    def flaky(path: Path, *args: object) -> None:
        if str(path).endswith(".html"):
            raise OSError("disk full")
        real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(logitlab._outputs, "_write_synced", flaky)
    out = tmp_path / "o"
    r = runner.invoke(app, ["report", "--out", str(out)])
    assert r.exit_code == 2 and "disk full" in r.stderr
    assert not (out / "report.json").exists() and not (out / "report.html").exists()


def test_health_findings_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types
    from dataclasses import dataclass

    from logitlab.app.evaluate import health_findings

    seen: dict[str, object] = {}

    @dataclass
    class Finding:
        severity: str
        code: str
        message: str

    def diagnose(logits: np.ndarray, target: np.ndarray) -> object:
        seen["shape"], seen["n_labels"] = logits.shape, target.shape[0]
        return types.SimpleNamespace(findings=[Finding("medium", "x", "logits saturate")])

    fake = types.ModuleType("logitlab.diagnostics")
    fake.diagnose = diagnose  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "logitlab.diagnostics", fake)
    z, y = np.zeros((3, 2)), np.array([0, 1, 0])
    assert health_findings(z, y) == [
        {"severity": "medium", "code": "x", "message": "logits saturate"}
    ]
    assert seen == {"shape": (3, 2), "n_labels": 3}
    out = tmp_path / "o"
    r = runner.invoke(app, ["report", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "logits saturate" in r.stdout and "logits saturate" in (out / "report.html").read_text()

    def broken(logits: np.ndarray, target: np.ndarray) -> object:
        raise RuntimeError("boom")

    fake.diagnose = broken  # type: ignore[attr-defined]
    assert health_findings(z, y)[0]["code"] == "diagnostics-failed"


@pytest.mark.parametrize("fmt", ["float16.npz", "bfloat16.safetensors", "float32.pt"])
def test_half_precision_probability_files_are_accepted(tmp_path: Path, fmt: str) -> None:
    # issue 13 item 9: the row-sum tolerance follows the dtype stored in the file (bfloat16
    # comes widened to float32 by the loader, with bfloat16's rounding)
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, fmt.split(".")[0])
    p = torch.softmax(torch.randn(300, 3, generator=g).to(dtype), dim=-1)
    y = torch.randint(0, 3, (300,), generator=g)
    f = tmp_path / f"p.{fmt.split('.')[1]}"
    if fmt.endswith("npz"):
        np.savez(f, probs=p.numpy(), labels=y.numpy())
    elif fmt.endswith("safetensors"):
        from safetensors.torch import save_file

        save_file({"probs": p, "labels": y}, str(f))
    else:
        torch.save({"probs": p, "labels": y}, f)
    r = runner.invoke(app, ["evaluate", str(f), "--json"])
    assert r.exit_code == 0, r.output
    # the report scores log p as logits, i.e. the rows renormalised (they sum to 1 only within
    # half-precision rounding)
    ref = torch.nn.functional.cross_entropy(p.double().log(), y).item()
    assert json.loads(r.stdout)["metrics"]["nll"] == pytest.approx(ref, rel=1e-12)


def _binary_data(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) * 2 + 0.3
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-0.8 * z))).astype(np.int64)  # overconfident
    return z, y


def _sklearn_reliability(y: np.ndarray, p1: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """Per non-empty bin: count, mean P(class 1), frequency of class 1 (scikit-learn)."""
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(y, p1, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0, 1, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p1), minlength=n_bins)
    return {"count": counts[counts > 0], "conf": prob_pred, "freq": prob_true}


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_binary_file_numbers_match_scikit_learn(tmp_path: Path, kind: str) -> None:
    # issue 13 item 6: binary (N,) scores printed brier 0.10284 (twice brier_score_loss) and a
    # top-5 accuracy of 1.0; every number of the binary path is checked against scikit-learn
    from scipy.special import expit
    from sklearn.metrics import brier_score_loss, log_loss, top_k_accuracy_score

    z, y = _binary_data()
    p1 = expit(z)
    scores = p1 if kind == "probs" else z
    f = tmp_path / "binary.npz"
    np.savez(f, **{kind: scores}, labels=y)
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", str(f), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    m = d["metrics"]
    assert m["brier"] == pytest.approx(brier_score_loss(y, p1), rel=1e-12)
    assert d["brier_decomposition"]["brier"] == pytest.approx(brier_score_loss(y, p1), rel=1e-12)
    assert m["nll"] == pytest.approx(log_loss(y, p1), rel=1e-12)
    assert m["accuracy"] == top_k_accuracy_score(y, scores, k=1)
    assert "top5_accuracy" not in m
    # reliability of P(class 1) (scikit-learn's calibration_curve), and the ECE/MCE/RMSCE of it
    ref = _sklearn_reliability(y, p1, 15)
    table = d["reliability_before"]
    counts = np.asarray(table["counts"])
    np.testing.assert_array_equal(counts[counts > 0], ref["count"])
    conf = np.asarray(table["confidence"], dtype=float)[counts > 0]
    freq = np.asarray(table["accuracy"], dtype=float)[counts > 0]
    np.testing.assert_allclose(conf, ref["conf"], rtol=1e-12)
    np.testing.assert_allclose(freq, ref["freq"], rtol=1e-12)
    gap = np.abs(ref["conf"] - ref["freq"])
    w = ref["count"] / y.size
    ece, mce, rmsce = float(np.sum(w * gap)), float(gap.max()), float(np.sqrt(np.sum(w * gap**2)))
    assert m["ece"] == pytest.approx(ece, rel=1e-12)
    assert m["mce"] == pytest.approx(mce, rel=1e-12)
    assert m["rmsce"] == pytest.approx(rmsce, rel=1e-12)
    batch = {
        (c["norm"], c["binning"]): c["value"]
        for c in d["calibration"]
        if c["mode"] == "top-label" and not c["debiased"]
    }
    assert batch[("l1", "equal-width")] == pytest.approx(ece, rel=1e-12)
    assert batch[("max", "equal-width")] == pytest.approx(mce, rel=1e-12)
    # Murphy's decomposition of the one-column score, from scikit-learn's bins
    b = d["brier_decomposition"]
    obar = y.mean()
    assert b["reliability"] == pytest.approx(np.sum(w * (ref["conf"] - ref["freq"]) ** 2), rel=1e-9)
    assert b["resolution"] == pytest.approx(np.sum(w * (ref["freq"] - obar) ** 2), rel=1e-9)
    assert b["uncertainty"] == pytest.approx(obar * (1 - obar), rel=1e-12)
    # the temperature's before/after ECE are of the same P(class 1) tables
    assert d["temperature"]["ece_before"] == pytest.approx(ece, rel=1e-12)
    after = d["reliability_after"]
    ca = np.asarray(after["counts"])
    ga = np.abs(np.asarray(after["confidence"], float) - np.asarray(after["accuracy"], float))
    assert d["temperature"]["ece_after"] == pytest.approx(
        float(np.sum(ca[ca > 0] / y.size * ga[ca > 0])), rel=1e-12
    )
    html = (out / "report.html").read_text()
    assert "top-5" not in html and "P(class 1)" in d["notes"][-1]


def test_top5_is_shown_only_above_five_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for c, shown in ((2, False), (5, False), (6, True)):
        f = _write(tmp_path, rng.standard_normal((60, c)), rng.integers(0, c, 60))
        r = runner.invoke(app, ["evaluate", str(f)])
        assert r.exit_code == 0, r.output
        assert ("top-5 accuracy" in r.stdout) is shown
        js = json.loads(runner.invoke(app, ["evaluate", str(f), "--json"]).stdout)
        assert ("top5_accuracy" in js["metrics"]) is shown


def test_two_column_binary_file_matches_unscaled_scikit_learn(tmp_path: Path) -> None:
    # (N, 2) scores are a 2-class problem: the Brier score sums both columns (scikit-learn's
    # brier_score_loss with scale_by_half=False) and the report says so
    from sklearn.metrics import brier_score_loss

    z, y = _binary_data(800, 1)
    p = np.stack([1 - 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-z))], 1)
    np.savez(tmp_path / "two.npz", probs=p, labels=y)
    r = runner.invoke(app, ["report", str(tmp_path / "two.npz"), "--json", "--out", str(tmp_path)])
    d = json.loads(r.stdout)
    ref = brier_score_loss(y, p, scale_by_half=False)
    assert d["metrics"]["brier"] == pytest.approx(ref, rel=1e-12)
    assert d["brier_decomposition"]["brier"] == pytest.approx(ref, rel=1e-12)
    assert any("halves it for 2 classes" in note for note in d["notes"])


def test_probability_zero_on_a_label_is_an_infinite_nll_and_said_so(tmp_path: Path) -> None:
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    np.savez(tmp_path / "p.npz", probs=p, labels=np.array([2, 2, 1, 0]))
    r = runner.invoke(app, ["report", str(tmp_path / "p.npz"), "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["metrics"]["nll"] == "inf" and d["metrics"]["perplexity"] == "inf"
    assert any("probability 0 to their label" in note for note in d["notes"])


def test_evaluate_warns_when_the_logits_are_probabilities(tmp_path: Path) -> None:
    # evaluate printed NLL 1.2886 for 0.9294 with no word when a file's logits were softmax output;
    # report said so in its findings. Both now say it, evaluate on stderr and in its JSON.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 5)) * 2
    y = rng.integers(0, 5, 500)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    f = tmp_path / "probs_as_logits.npz"
    np.savez(f, logits=p, labels=y)
    for extra in ([], ["--json"]):
        r = runner.invoke(app, ["evaluate", str(f), *extra])
        assert r.exit_code == 0, r.output
        assert "logitlab: warning:" in r.stderr and "--probs" in r.stderr
    d = json.loads(r.stdout)
    assert d["input_kind"] == "logits"
    assert [x["code"] for x in d["findings"]][0] == "probabilities-as-logits"
    assert "ok" not in [x["code"] for x in d["findings"]]
    r = runner.invoke(app, ["evaluate", str(f), "--probs", "--json"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    assert json.loads(r.stdout)["metrics"]["nll"] == pytest.approx(
        float(np.mean(-np.log(p[np.arange(500), y]))), rel=1e-9
    )
