"""Findings and advice: what a :class:`~logitlab.diagnostics.LogitReport`'s numbers mean."""

from __future__ import annotations

from logitlab.diagnostics.formats import FORMATS
from logitlab.diagnostics.results import Finding, LogitReport

_CONF = 0.99  # "confident": top probability above this


def _findings(rep: LogitReport) -> list[Finding]:
    out: list[Finding] = []
    b = rep.basic
    if b.nonfinite_rows:
        out.append(
            Finding(
                "high",
                "nonfinite",
                f"{b.nonfinite_rows} of {rep.n_rows} rows contain NaN or inf "
                f"(NaN {b.nan_count}, +inf {b.posinf_count}, -inf {b.neginf_count}); they are "
                "excluded from the other statistics",
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
                f"are wrong with top probability > {_CONF}"
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
