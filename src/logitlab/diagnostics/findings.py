"""Findings and advice: what a :class:`~logitlab.diagnostics.LogitReport`'s numbers mean."""

from __future__ import annotations

import math

import numpy as np

from logitlab.diagnostics.formats import FORMATS
from logitlab.diagnostics.hist import GradHist
from logitlab.diagnostics.results import Finding, LogitReport, MixedPrecision

__all__ = ["CONFIDENT", "findings", "loss_scale_advice"]

CONFIDENT = 0.99  # "confident": top probability above this


def _first_in(rep: LogitReport, row: int | None) -> str:
    # ", first in row 13" (with its index when the rows span more than one axis)
    if row is None:
        return ""
    lead = [n for i, n in enumerate(rep.shape) if i != rep.axis % len(rep.shape)]
    if len(lead) <= 1:
        return f", first in row {row}"
    return f", first in row {row} (index {tuple(int(i) for i in np.unravel_index(row, lead))})"


def findings(rep: LogitReport) -> list[Finding]:
    """The findings of a report, most severe first."""
    out: list[Finding] = []
    b = rep.basic
    if b.nonfinite_rows:
        kinds = [
            f"{count} {name}" + _first_in(rep, row)
            for name, count, row in (
                ("NaN", b.nan_count, b.first_nan_row),
                ("+inf", b.posinf_count, b.first_posinf_row),
                ("-inf", b.neginf_count, b.first_neginf_row),
            )
        ]
        out.append(
            Finding(
                "high",
                "nonfinite",
                f"{b.nonfinite_rows} of {rep.n_rows} rows contain NaN or inf "
                f"({'; '.join(kinds)}); they are excluded from the other statistics",
                "NaN/+inf logits come from an earlier overflow; -inf is usually a mask: make sure "
                "each row keeps a finite entry and use a masked softmax",
            )
        )
    if not b.finite_rows:
        return out
    for name in ("float16", "bfloat16"):
        r = rep.dtypes[name]
        if not r.max_representable:
            out.append(
                Finding(
                    "high",
                    f"{name}-range",
                    f"max |z| = {b.max_abs:.4g} exceeds the largest {name} value "
                    f"({FORMATS[name].max:.5g}): the logits themselves overflow to inf",
                    "keep the output layer in float32 or cap the logits (soft-capping)",
                )
            )
    f16 = rep.dtypes["float16"]
    if f16.naive_overflow_rows:
        bf = rep.dtypes["bfloat16"]
        alt = (
            "use bfloat16 or keep the loss in float32"
            if bf.naive_overflow_rows == 0
            else "compute softmax/cross-entropy in float32 with max subtraction"
        )
        out.append(
            Finding(
                "high",
                "float16-naive-overflow",
                f"float16 softmax overflows on {f16.naive_overflow_fraction:.1%} of rows "
                f"(max logit {b.max:.4g} vs ln 65504 = {f16.exp_limit:.2f}) when exp is taken "
                "without subtracting the row max",
                f"{alt}; logitlab.softmax / cross_entropy subtract the max and compute in float32",
            )
        )
    for name in ("bfloat16", "float32"):
        r = rep.dtypes[name]
        if r.naive_overflow_rows:
            out.append(
                Finding(
                    "high",
                    f"{name}-naive-overflow",
                    f"even {name} naive softmax overflows on {r.naive_overflow_fraction:.1%} of "
                    "rows",
                    "always subtract the row max (log-sum-exp trick)",
                )
            )
    if f16.naive_nan_rows:
        out.append(
            Finding(
                "medium",
                "float16-naive-underflow",
                f"on {f16.naive_nan_rows} rows every float16 exp(z) underflows to 0 (0/0 = NaN "
                "in a naive softmax)",
                "subtract the row max before exp",
            )
        )
    if f16.stable_zero_rows:
        out.append(
            Finding(
                "low",
                "float16-zero-prob",
                f"the stable float16 softmax still rounds some probabilities to exactly 0 on "
                f"{f16.stable_zero_fraction:.1%} of rows: log(p) = -inf there",
                "take log_softmax (never log(softmax)) and compute the loss in float32",
            )
        )
    sat16 = f16.saturated_fraction
    if sat16 > 0.01:
        out.append(
            Finding(
                "medium" if sat16 < 0.5 else "high",
                "saturation",
                f"{sat16:.1%} of rows have top probability > 1 - 2^-10 (float16 eps): softmax - "
                "onehot vanishes there in float16",
                "lower the temperature of the targets (label smoothing), add a z-loss or cap the "
                "logits; check for over-confident training",
            )
        )
    s = rep.saturation
    if s.has_target and s.confident_wrong_rows:
        out.append(
            Finding(
                "medium",
                "confidently-wrong",
                f"{s.confident_wrong_rows} rows ({s.confident_wrong_rows / b.finite_rows:.1%}) "
                f"are wrong with top probability > {CONFIDENT}"
                + (
                    f"; {s.saturated_wrong_rows} of them saturated"
                    if s.saturated_wrong_rows
                    else ""
                ),
                "inspect these rows (label noise?) and calibrate (temperature scaling)",
            )
        )
    mp = rep.mixed_precision
    if mp.subnormal_fraction + mp.zero_fraction > 0.01:
        out.append(
            Finding(
                "low",
                "loss-scale",
                f"{mp.zero_fraction + mp.subnormal_fraction:.1%} of the CE gradients are zero or "
                f"subnormal in float16; a static loss scale of {mp.loss_scale:.0f} leaves "
                f"{mp.scaled_zero_fraction + mp.scaled_subnormal_fraction:.1%}",
                f"use loss scale {mp.loss_scale:.0f} (x N for a mean over N rows) or dynamic "
                "loss scaling; bfloat16 needs none",
            )
        )
    c = rep.conditioning
    if c.ratio_median > 1e3 and c.lse_median < 10:
        out.append(
            Finding(
                "low",
                "kappa-ratio",
                f"the ratio max|z|/min|z| is large (median {c.ratio_median:.3g}) but log-sum-exp "
                f"is well conditioned (median kappa_lse {c.lse_median:.3g})",
                "ignore the ratio: a logit near 0 makes it large without any loss of accuracy",
            )
        )
    if c.loss_median > 1e4:
        out.append(
            Finding(
                "low",
                "kappa-loss",
                f"the loss is ill-conditioned (median kappa {c.loss_median:.3g}): tiny relative "
                "changes of the logits change it a lot; it is near 0 on saturated rows",
                "compute the loss from logits in float32 or float64 (logitlab.cross_entropy)",
            )
        )
    if rep.n_classes > 1 and rep.entropy.normalized_mean < 0.01:
        out.append(
            Finding(
                "medium",
                "collapsed",
                f"mean entropy is {rep.entropy.normalized_mean:.2%} of log V: the distributions "
                "are nearly one-hot",
                "check for logit blow-up (weight decay, z-loss, logit soft-capping)",
            )
        )
    if not out:
        out.append(
            Finding("low", "ok", "no numerical risk found in these logits", "nothing to change")
        )
    order = {"high": 0, "medium": 1, "low": 2}
    return sorted(out, key=lambda f: order[f.severity])


def _grad_counts(grad: GradHist, k: int) -> tuple[int, int, int]:
    """Entries that are zero, subnormal and (surely) overflowing in float16 after scale 2^k."""
    f16 = FORMATS["float16"]
    # |g| 2^k < 2^-25 <=> floor(log2|g|) < -25 - k: rounds to 0 (2^-25 itself ties to 0 too,
    # counted as subnormal here); < 2^-14 <=> floor < -14 - k: subnormal.
    e = grad.exponents()
    zero = grad.zero + int(grad.counts[e < -25 - k].sum())
    sub = int(grad.counts[(e >= -25 - k) & (e < f16.emin - k)].sum())
    # Overflow: exactly none if max|g| 2^k is below the boundary; else the bins surely above it.
    if grad.max * 2.0**k < math.exp(f16.overflow_log):
        over = 0
    else:
        over = max(1, int(grad.counts[e >= 16 - k].sum()))
    return zero, sub, over


def loss_scale_advice(grad: GradHist, ng: int, has_t: bool) -> MixedPrecision:
    """The float16 fractions of the cross-entropy gradient ``softmax - onehot`` (``ng`` entries
    counted in ``grad``) and the recommended static loss scale, with its reasoning."""
    src = "target" if has_t else "argmax"
    if ng == 0:
        nan = math.nan
        return MixedPrecision(src, 0, nan, nan, nan, nan, 1.0, nan, nan, nan, [])
    f16 = FORMATS["float16"]
    z0, s0, o0 = _grad_counts(grad, 0)
    nonzero_true = ng - grad.zero  # gradients that are not 0 in the work dtype
    # Largest k keeping the largest gradient finite (with the exact max).
    if grad.max > 0:
        k_max = int(math.floor(math.log2(f16.max / grad.max)))
        while grad.max * 2.0**k_max > f16.max:
            k_max -= 1
    else:
        k_max = 24
    k_max = max(0, min(k_max, 24))
    # Smallest k leaving at most 1% of the nonzero gradients below the normal range.
    k_need = None
    for k in range(0, 64):
        zk, sk, _ = _grad_counts(grad, k)
        if zk + sk - grad.zero <= 0.01 * nonzero_true:
            k_need = k
            break
    k = k_max if k_need is None else min(k_need, k_max)
    zk, sk, ok_ = _grad_counts(grad, k)
    why = [
        f"gradient of cross-entropy w.r.t. the logits, softmax - onehot({src}), per row "
        f"(sum reduction): {ng} entries, max |g| = {grad.max:.4g}",
        f"in float16 at scale 1: {z0 / ng:.2%} round to 0 (|g| < 2^-25), "
        f"{s0 / ng:.2%} are subnormal (|g| < 2^-14), none overflow (|g| <= 1)",
        f"scale 2^{k_max} is the largest power of 2 with max|g| * S <= 65504 (finite)",
    ]
    if k_need is None:
        why.append(
            f"no scale up to 2^{k_max} lifts 99% of the nonzero gradients out of the "
            "subnormal range: the gradients span more than float16's exponent range; "
            "use bfloat16 or keep the gradient of the loss in float32"
        )
    elif k_need > k_max:
        why.append(
            f"lifting 99% of the nonzero gradients needs 2^{k_need} > 2^{k_max}: "
            f"capped at 2^{k_max} to keep the largest gradient finite"
        )
    else:
        why.append(
            f"2^{k_need} is the smallest power of 2 that leaves at most 1% of the nonzero "
            "gradients below the normal range (smaller scales keep more headroom)"
        )
    why.append(
        f"at S = 2^{k}: {zk / ng:.2%} round to 0, {sk / ng:.2%} subnormal, "
        f"{ok_ / ng:.2%} overflow; with a loss averaged over N rows the gradients are N times "
        "smaller: multiply S by N (or use dynamic loss scaling)"
    )
    return MixedPrecision(
        target_source=src,
        n_gradients=ng,
        max_abs_grad=grad.max,
        zero_fraction=z0 / ng,
        subnormal_fraction=s0 / ng,
        overflow_fraction=o0 / ng,
        loss_scale=float(2.0**k),
        scaled_zero_fraction=zk / ng,
        scaled_subnormal_fraction=sk / ng,
        scaled_overflow_fraction=ok_ / ng,
        reasoning=why,
    )
