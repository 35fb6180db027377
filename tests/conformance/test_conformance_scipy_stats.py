"""SciPy conformance: entropy with ``qk``/``base``/``axis``, ``rel_entr``/``kl_div``, JS.

Sources (SciPy 1.17.1; the test files ship with the installed wheel, as on github.com/scipy/scipy):

* ``scipy/stats/tests/test_entropy.py``, class ``TestEntropy``: ``stats.entropy(pk)`` is
  logitlab's ``entropy(probs=pk)`` and ``stats.entropy(pk, qk)`` is ``kl_divergence(pk, qk)``;
* ``scipy/special/tests/test_basic.py``: ``test_rel_entr``, ``test_kl_div``,
  ``test_rel_entr_gh_20710_near_zero`` (elementwise terms; logitlab has their sum, the KL of two
  distributions);
* ``scipy/spatial/tests/test_distance.py::test_jensenshannon`` (SciPy returns the JS *distance*,
  the square root of logitlab's ``js_divergence``).

SciPy normalises ``pk``/``qk`` (and ``jensenshannon``'s inputs) silently; logitlab validates
probabilities and raises on unnormalised input. That difference is asserted once per peer function
(the ``test_diff_*`` cases) and the value cases pass normalised input, which gives SciPy's value.
Every case runs on the NumPy, torch and array-api-strict backends.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special as sp
from scipy import stats
from scipy.spatial.distance import jensenshannon
from tests import reference as R
from tests.conformance._support import DELIBERATE, backends, close, rel, to_np
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
TIGHT = 1e-13
PK = np.array([[0.1, 0.2], [0.6, 0.3], [0.3, 0.5]])  # columns sum to 1 (TestEntropy's pk)
QK = np.array([[0.2, 0.1], [0.3, 0.6], [0.5, 0.3]])


def _norm(a: np.ndarray, axis: int = 0) -> np.ndarray:
    return a / np.sum(a, axis=axis, keepdims=True)


# --------------------------------------------------------------------------- stats.entropy


@backends()
def test_entropy_positive(backend: Backend) -> None:
    # TestEntropy.test_entropy_positive: entropy(pk, pk) == 0, entropy(pk, qk) > 0
    pk, qk = [0.5, 0.2, 0.3], [0.1, 0.25, 0.65]
    same = ll.kl_divergence(backend.asarray(pk), backend.asarray(pk))
    np.testing.assert_array_equal(to_np(same), 0.0)
    d = ll.kl_divergence(backend.asarray(pk), backend.asarray(qk))
    assert float(to_np(d)) > 0
    close(d, stats.entropy(pk, qk), TIGHT)
    assert R.ulp_error(float(to_np(d)), R.kl(pk, qk), np.float64) <= 4


@backends()
def test_entropy_base(backend: Backend) -> None:
    # TestEntropy.test_entropy_base: 16 equal classes have 4 bits; the base only rescales
    pk = np.ones(16) / 16
    close(ll.entropy(probs=backend.asarray(pk), base=2.0), 4.0, rel(np.float64))
    qk = _norm(np.where(np.arange(16) < 8, 2.0, 1.0))
    s = ll.kl_divergence(backend.asarray(pk), backend.asarray(qk))
    s2 = ll.kl_divergence(backend.asarray(pk), backend.asarray(qk), base=2.0)
    close(to_np(s) / to_np(s2), math.log(2.0), TIGHT)
    close(s, stats.entropy(pk, qk), TIGHT)


@backends()
def test_entropy_zero_probability(backend: Backend) -> None:
    # TestEntropy.test_entropy_zero: entropy([0, 1, 2]) = 0.63651416829481278 after SciPy's
    # normalisation; 0 log 0 = 0
    h = ll.entropy(probs=backend.asarray(_norm(np.array([0.0, 1.0, 2.0]))))
    close(h, 0.63651416829481278, TIGHT)
    assert R.ulp_error(float(to_np(h)), R.entropy_probs([0.0, 1 / 3, 2 / 3]), np.float64) <= 4


@backends()
def test_entropy_2d(backend: Backend) -> None:
    # TestEntropy.test_entropy_2d: SciPy's default axis is 0 -> [0.1933259, 0.18609809]
    d = ll.kl_divergence(backend.asarray(PK), backend.asarray(QK), axis=0)
    close(d, [0.1933259, 0.18609809], 1e-7)  # SciPy's constants have 7 digits
    close(d, stats.entropy(PK, QK), TIGHT)


@backends()
def test_entropy_2d_zero(backend: Backend) -> None:
    # TestEntropy.test_entropy_2d_zero: q = 0 where p > 0 gives inf; p = 0 terms vanish. SciPy
    # normalises the columns (they sum to 0.8 and 0.9); the normalised columns give its values.
    qk = np.array([[0.0, 0.1], [0.3, 0.6], [0.5, 0.3]])
    d = ll.kl_divergence(backend.asarray(PK), backend.asarray(_norm(qk)), axis=0)
    close(d, [INF, 0.18609809], 1e-7)
    close(d, stats.entropy(PK, qk), TIGHT)
    pk = np.array([[0.0, 0.2], [0.6, 0.3], [0.3, 0.5]])
    d = ll.kl_divergence(backend.asarray(_norm(pk)), backend.asarray(_norm(qk)), axis=0)
    close(d, [0.17403988, 0.18609809], 1e-7)
    close(d, stats.entropy(pk, qk), TIGHT)


@backends()
def test_entropy_nondefault_axis(backend: Backend) -> None:
    # TestEntropy.test_entropy_base_2d_nondefault_axis and test_entropy_2d_nondefault_axis (rows
    # normalised as SciPy does) -> [0.63651417, 0.63651417, 0.66156324], [0.23104906, ...]
    h = ll.entropy(probs=backend.asarray(_norm(PK, 1)), axis=1)
    close(h, [0.63651417, 0.63651417, 0.66156324], 1e-7)
    close(h, stats.entropy(PK, axis=1), TIGHT)
    d = ll.kl_divergence(backend.asarray(_norm(PK, 1)), backend.asarray(_norm(QK, 1)), axis=1)
    close(d, [0.23104906, 0.23104906, 0.12770641], 1e-7)
    close(d, stats.entropy(PK, QK, axis=1), TIGHT)


@backends()
def test_entropy_transposed(backend: Backend) -> None:
    # TestEntropy.test_base_entropy_with_axis_0_is_equal_to_default, test_base_entropy_transposed,
    # test_entropy_with_axis_0_is_equal_to_default, test_entropy_transposed
    h0 = ll.entropy(probs=backend.asarray(PK), axis=0)
    close(h0, stats.entropy(PK), TIGHT)
    close(ll.entropy(probs=backend.asarray(PK.T), axis=1), to_np(h0), TIGHT)
    d0 = ll.kl_divergence(backend.asarray(PK), backend.asarray(QK), axis=0)
    close(d0, stats.entropy(PK, QK), TIGHT)
    close(ll.kl_divergence(backend.asarray(PK.T), backend.asarray(QK.T), axis=1), to_np(d0), TIGHT)


@DELIBERATE("entropy/kl_divergence reduce over axis=-1 by default; scipy.stats.entropy over 0")
@backends()
def test_diff_entropy_default_axis(backend: Backend) -> None:
    # TestEntropy.test_base_entropy_with_axis_0_is_equal_to_default: SciPy's default is axis 0.
    # PK's columns are distributions, its rows are not: logitlab's default (-1) refuses them.
    with pytest.raises(ValueError, match="sum to 1"):
        ll.entropy(probs=backend.asarray(PK))
    close(ll.entropy(probs=backend.asarray(PK.T)), stats.entropy(PK), TIGHT)


@DELIBERATE(
    "probabilities are validated: unnormalised pk/qk raise ValueError naming the argument; "
    "scipy.stats.entropy normalises them silently"
)
@backends()
def test_diff_entropy_unnormalised_input_rejected(backend: Backend) -> None:
    # TestEntropy.test_entropy_zero ([0, 1, 2]), test_entropy_base (ones(16)), test_entropy_2d_zero
    # (a column summing to 0.8): SciPy's values come from its silent normalisation.
    assert stats.entropy([0.0, 1.0, 2.0]) == pytest.approx(0.63651416829481278, rel=1e-15)
    with pytest.raises(ValueError, match="probs"):
        ll.entropy(probs=backend.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="probs must sum to 1"):
        ll.entropy(probs=backend.asarray(np.ones(16)), base=2.0)
    qk = np.array([[0.0, 0.1], [0.3, 0.6], [0.5, 0.3]])
    with pytest.raises(ValueError, match="q must sum to 1"):
        ll.kl_divergence(backend.asarray(PK), backend.asarray(qk), axis=0)


@DELIBERATE("the two distributions must have the same shape; scipy.stats.entropy broadcasts them")
@backends()
def test_diff_entropy_broadcasting(backend: Backend) -> None:
    # TestEntropy.test_entropy_broadcasting: x (3,) against y (2, 1); SciPy broadcasts.
    rng = np.random.default_rng(74187315492831452)
    x, y = _norm(rng.random(3)), rng.random((2, 1))
    res = stats.entropy(x, y, axis=-1)
    with pytest.raises(ValueError, match="different shapes"):
        ll.kl_divergence(backend.asarray(x), backend.asarray(y))
    xb, yb = np.broadcast_arrays(x, y)
    d = ll.kl_divergence(backend.asarray(xb.copy()), backend.asarray(_norm(yb, 1)))
    close(d, res, TIGHT)


@backends()
def test_entropy_shape_mismatch_and_bad_base(backend: Backend) -> None:
    # TestEntropy.test_entropy_raises_value_error, test_entropy_shape_mismatch and
    # test_input_validation: incompatible shapes and base=-2 are ValueErrors, as in SciPy
    pk = backend.asarray(PK)
    with pytest.raises(ValueError, match="shape"):
        ll.kl_divergence(pk, backend.asarray(QK[:2]), axis=0)
    with pytest.raises(ValueError, match="base"):
        ll.entropy(probs=backend.asarray([0.5, 0.5]), base=-2)
    with pytest.raises(ValueError, match="base"):
        ll.kl_divergence(backend.asarray([0.5, 0.5]), backend.asarray([0.5, 0.5]), base=-2)


# --------------------------------------------------------------------------- rel_entr / kl_div

TWO_POINT = [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]


@pytest.mark.parametrize("p", TWO_POINT, ids=str)
@pytest.mark.parametrize("q", TWO_POINT, ids=str)
@backends()
def test_rel_entr_and_kl_div_domain(backend: Backend, p: tuple, q: tuple) -> None:
    # test_basic.py::test_rel_entr and ::test_kl_div on the values (0, 0.5, 1): the sum of
    # rel_entr (x log(x/y); 0 for x = 0; inf for y = 0 < x) and of kl_div (x log(x/y) - x + y) over
    # two distributions is their KL divergence.
    d = ll.kl_divergence(backend.asarray(p), backend.asarray(q))
    expected = float(np.sum(sp.rel_entr(p, q)))
    np.testing.assert_allclose(to_np(d), expected, rtol=TIGHT)
    np.testing.assert_allclose(to_np(d), float(np.sum(sp.kl_div(p, q))), rtol=TIGHT)


@DELIBERATE(
    "negative probabilities raise ValueError; scipy.special.rel_entr/kl_div return inf (their "
    "convex extension)"
)
@backends()
def test_diff_negative_probability_rejected(backend: Backend) -> None:
    # test_basic.py::test_rel_entr / ::test_kl_div, the negative arguments
    assert np.isinf(sp.rel_entr(-0.5, 0.5)) and np.isinf(sp.kl_div(0.5, -0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ll.kl_divergence(backend.asarray([-0.5, 1.5]), backend.asarray([0.5, 0.5]))


NEAR = [
    # test_basic.py::test_rel_entr_gh_20710_near_zero: (x, y) pairs within a few ulps
    (0.9456657713430001, 0.9456657713430094),
    (0.48066098564791515, 0.48066098564794774),
    (0.786048657854401, 0.7860486578542367),
]


def _generalized_kl(p: np.ndarray, q: np.ndarray) -> mpmath.mpf:
    # sum p log(p/q) - p + q of the float inputs, exactly: the quantity logitlab documents. For
    # p, q summing to 1 it is the KL divergence; here 1 - x is rounded, so sum(p) and sum(q)
    # differ from 1 by an ulp and the textbook sum p log(p/q) would be that ulp, not the KL.
    mpmath.mp.dps = 60
    return mpmath.fsum(
        mpmath.mpf(a) * mpmath.log(mpmath.mpf(a) / mpmath.mpf(b)) - mpmath.mpf(a) + mpmath.mpf(b)
        for a, b in zip(p.tolist(), q.tolist(), strict=True)
    )


@pytest.mark.parametrize("x, y", NEAR)
@backends()
def test_kl_near_equal_distributions(backend: Backend, x: float, y: float) -> None:
    # test_basic.py::test_rel_entr_gh_20710_near_zero ("Check accuracy of inputs which are very
    # close"): as the distributions [x, 1 - x] and [y, 1 - y], KL ~ 1e-27 must keep its relative
    # accuracy (SciPy checks each term to rtol 1e-13; summing them loses everything).
    p, q = np.array([x, 1 - x]), np.array([y, 1 - y])
    d = float(to_np(ll.kl_divergence(backend.asarray(p), backend.asarray(q))))
    exact = _generalized_kl(p, q)
    assert 0 < float(exact) < 1e-24
    assert abs(d - float(exact)) <= 1e-13 * float(exact)


# --------------------------------------------------------------------------- jensenshannon


@backends()
def test_jensenshannon_values(backend: Backend) -> None:
    # test_distance.py::test_jensenshannon, the 1-D cases (distance = sqrt(divergence))
    js = ll.js_divergence(
        backend.asarray([1.0, 0.0, 0.0]), backend.asarray([0.0, 1.0, 0.0]), base=2.0
    )
    close(np.sqrt(to_np(js)), 1.0, TIGHT)
    js = ll.js_divergence(backend.asarray([1.0, 0.0]), backend.asarray([0.5, 0.5]))
    close(np.sqrt(to_np(js)), 0.46450140402245893, TIGHT)
    assert R.ulp_error(float(to_np(js)), R.js([1.0, 0.0], [0.5, 0.5]), np.float64) <= 4
    js = ll.js_divergence(backend.asarray([1.0, 0.0, 0.0]), backend.asarray([1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(to_np(js), 0.0)


@backends()
def test_jensenshannon_axes(backend: Backend) -> None:
    # test_distance.py::test_jensenshannon, the 2-D cases, normalised as SciPy does
    p, q = np.array([[1.0, 2.0]]), np.array([[0.5, 1.5]])
    d0 = ll.js_divergence(backend.asarray(_norm(p, 0)), backend.asarray(_norm(q, 0)), axis=0)
    close(np.sqrt(to_np(d0)), [0.0, 0.0], 0, atol=0)
    d1 = ll.js_divergence(backend.asarray(_norm(p, 1)), backend.asarray(_norm(q, 1)), axis=1)
    close(np.sqrt(to_np(d1)), [0.0649045], 0, atol=1.5e-7)  # assert_almost_equal: 7 decimals
    close(np.sqrt(to_np(d1)), jensenshannon(p, q, axis=1), TIGHT)
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], dtype=float)
    b = np.array([[13, 14, 15, 16], [17, 18, 19, 20], [21, 22, 23, 24]], dtype=float)
    for axis, expected in [
        (0, [0.1954288, 0.1447697, 0.1138377, 0.0927636]),
        (1, [0.1402339, 0.0399106, 0.0201815]),
    ]:
        d = ll.js_divergence(
            backend.asarray(_norm(a, axis)), backend.asarray(_norm(b, axis)), axis=axis
        )
        close(np.sqrt(to_np(d)), expected, 0, atol=1.5e-7)  # assert_almost_equal: 7 decimals
        close(np.sqrt(to_np(d)), jensenshannon(a, b, axis=axis), TIGHT)


@DELIBERATE(
    "js_divergence validates probabilities (ValueError on unnormalised rows); "
    "scipy.spatial.distance.jensenshannon normalises them silently"
)
@backends()
def test_diff_jensenshannon_unnormalised_rejected(backend: Backend) -> None:
    # test_distance.py::test_jensenshannon: [[1, 2]] vs [[0.5, 1.5]] are not distributions
    p, q = np.array([[1.0, 2.0]]), np.array([[0.5, 1.5]])
    assert jensenshannon(p, q, axis=1)[0] == pytest.approx(0.0649045, abs=1e-7)
    with pytest.raises(ValueError, match="probabilities"):
        ll.js_divergence(backend.asarray(p), backend.asarray(q), axis=1)
