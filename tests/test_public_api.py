"""Every name the package exported before the redesign of issue 15 still imports from the same
path (the list is frozen here: the ``__all__`` of each public module at commit edb0b13), and the
layers contract of ``pyproject.toml`` holds."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

EXPORTED = {
    "logitlab": [
        "Evaluator", "LogitReport", "__version__", "accuracy", "binary_cross_entropy",
        "binary_cross_entropy_with_logits", "brier_decomposition", "brier_score",
        "calibration_error", "cross_entropy", "diagnose", "entropy", "fit_temperature",
        "js_divergence", "kl_divergence", "log1mexp", "log1pexp", "log_softmax", "logsumexp",
        "nll", "perplexity", "set_validation", "softmax", "validation", "validation_enabled",
        "xlog1py", "xlogy",
    ],
    "logitlab.losses": [
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "entropy",
        "js_divergence", "kl_divergence", "perplexity",
    ],
    "logitlab.special": [
        "log1mexp", "log1pexp", "log_softmax", "logsumexp", "softmax", "xlog1py", "xlogy",
    ],
    "logitlab.metrics": [
        "BinTable", "BrierDecomposition", "CalibrationResult", "EntropyStats",
        "EvaluationResult", "Evaluator", "LMPerplexity", "TemperatureResult", "accuracy",
        "all_reduce_state", "bin_table", "brier_decomposition", "brier_score",
        "calibration_error", "entropy_stats", "fit_temperature", "lm_perplexity",
        "load_local_model", "nll", "perplexity_from_logits", "sliding_window_nll",
    ],
    "logitlab.torch": [
        "CrossEntropy", "LinearCEStats", "LinearCrossEntropy", "LinearKLDivergence",
        "LogitMonitor", "LogitWarning", "cross_entropy", "linear_cross_entropy",
        "linear_kl_divergence",
    ],
    "logitlab.torch.monitor": [
        "Float16OverflowWarning", "LogitMonitor", "LogitWarning", "MonitorStats",
        "SaturationWarning",
    ],
    "logitlab.torch.modules": ["CrossEntropy", "LinearCrossEntropy", "LinearKLDivergence"],
    "logitlab.torch.kl": ["linear_kl_divergence"],
    "logitlab.diagnostics": [
        "FORMATS", "Finding", "LogitReport", "LogitStats", "diagnose", "diagnose_file",
        "round_to_format", "simulate_softmax",
    ],
    "logitlab.io": [
        "ArraySource", "LoadError", "atomic_write", "iter_row_chunks", "list_keys",
        "load_array", "load_predictions", "open_array",
    ],
    "logitlab.report": ["fig_to_data_uri", "html_page", "html_table", "to_json"],
    "logitlab.report.html": ["esc", "fig_to_data_uri", "html_page", "html_table"],
    "logitlab.metrics.calibration": [
        "BINNINGS", "BinTable", "CalibrationResult", "NORMS", "bin_table", "calibration_error",
        "uniform_edges",
    ],
    "logitlab.metrics.classification": [
        "BrierDecomposition", "EntropyStats", "accuracy", "brier_decomposition", "brier_score",
        "entropy_stats", "nll", "perplexity_from_logits",
    ],
    "logitlab.metrics.evaluator": ["EvaluationResult", "Evaluator", "all_reduce_state"],
    "logitlab.metrics.temperature": [
        "TemperatureResult", "fit_temperature", "nll_and_derivatives",
    ],
    "logitlab.metrics.lm": [
        "DocumentPerplexity", "LMPerplexity", "lm_perplexity", "load_local_model",
        "sliding_window_nll",
    ],
}  # fmt: skip
CASES = [(m, n) for m, names in EXPORTED.items() for n in names]


@pytest.mark.parametrize("module, name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_exported_name_still_imports(module: str, name: str) -> None:
    if module.startswith("logitlab.torch"):
        pytest.importorskip("torch")
    mod = importlib.import_module(module)
    assert getattr(mod, name) is not None
    if name in getattr(mod, "__all__", [name]):
        return
    pytest.fail(f"{module}.{name} imports but left {module}.__all__")


def test_function_names_of_the_torch_layer_are_functions() -> None:
    # logitlab.torch.cross_entropy / .linear_cross_entropy used to be both a module and a
    # function; they name the functions only (the modules are private: _cross_entropy, _linear_ce)
    lt = pytest.importorskip("logitlab.torch")
    assert callable(lt.cross_entropy) and callable(lt.linear_cross_entropy)
    assert "logitlab.torch.cross_entropy" not in sys.modules
    assert "logitlab.torch.linear_cross_entropy" not in sys.modules


def test_layers_contract_holds() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (it comes with the test extra)")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [str(exe), str(root / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:]
