"""LogitMonitor: warns once on float16 overflow and saturation, and can be removed."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from logitlab.torch.monitor import LogitMonitor, LogitWarning  # noqa: E402


def test_warns_once_on_fp16_overflow_and_removes() -> None:
    head = torch.nn.Linear(4, 6)
    with torch.no_grad():
        head.weight.mul_(0).add_(1.0)  # logits = 4 * sum(x) + bias: large for large x
    mon = LogitMonitor(head)
    with pytest.warns(LogitWarning, match="ln\\(65504\\)"):
        head(torch.full((3, 4), 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogitWarning)
        head(torch.full((3, 4), 5.0))  # second time: no warning
    assert mon.fp16_overflow_rows == 6 and mon.calls == 2
    mon.remove()
    head(torch.zeros(1, 4))
    assert mon.calls == 2


def test_saturation_warning_and_hf_style_output() -> None:
    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
            class Out:
                logits = x

            return Out()

    h = Head()
    with (
        LogitMonitor(h, saturation_threshold=0.5) as mon,
        pytest.warns(LogitWarning, match="saturated"),
    ):
        z = torch.zeros(4, 3)
        z[:, 0] = 40.0
        h(z)
    assert mon.summary()["saturated_fraction"] == 1.0
