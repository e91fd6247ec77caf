"""Special functions the array API lacks, written once on the arrays' own namespace.

The generic versions of :meth:`Backend.erf <wframe.backends.base.Backend.erf>` (NumPy, and any
other array-API library); JAX and CuPy override the method with their own kernels.
"""

from __future__ import annotations

from wframe.backends.namespace import array_namespace
from wframe.types import Array

# W. J. Cody's rational Chebyshev approximations (Math. Comp. 23, 1969; the CALERF routine of
# netlib's SPECFUN): relative error below 1e-16 in each range. erf(x) = x * R1(x^2) for
# |x| <= 0.46875, erfc(x) = exp(-x^2) * R2(x) up to 4, exp(-x^2) / x * (1/sqrt(pi) + R3(1/x^2) /
# x^2) beyond. Each pair is (numerator, denominator), highest-order coefficient first, as the
# Horner loops below read them.
#: The ends of the small and middle ranges.
SMALL = 0.46875
MIDDLE = 4.0
#: Above this |x| erf is 1 in float64 (erfc(6) = 2e-17); clamping keeps the tails overflow-free.
ONE = 6.0
R1 = (
    (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02,
     3.77485237685302021e02, 3.20937758913846947e03),
    (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
     2.84423683343917062e03),
)  # fmt: skip
R2 = (
    (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00,
     6.61191906371416295e01, 2.98635138197400131e02, 8.81952221241769090e02,
     1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03),
    (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
     1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
     3.43936767414372164e03, 1.23033935480374942e03),
)  # fmt: skip
R3 = (
    (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1,
     1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4),
    (1.0, 2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
     6.05183413124413191e-2, 2.33520497626869185e-3),
)  # fmt: skip
INV_SQRT_PI = 5.6418958354775628695e-1
_HALF = ("float16", "bfloat16")


def ratio(t: Array, coefficients) -> Array:
    """``P(t) / Q(t)`` by Horner's rule (Q's leading coefficient is 1)."""
    p, q = coefficients
    num, den = p[0] * t, t
    for a, b in zip(p[1:-1], q[1:-1], strict=True):
        num, den = (num + a) * t, (den + b) * t
    return (num + p[-1]) / (den + q[-1])


def erf_small(x: Array) -> Array:
    """erf on ``|x| <= SMALL``."""
    return x * ratio(x * x, R1)


def erfc_middle(y: Array) -> Array:
    """erfc on ``SMALL <= y <= MIDDLE`` (and finite, without overflow, on ``[0, ONE]``)."""
    return ratio(y, R2) * array_namespace(y).exp(-(y * y))


def erfc_tail(y: Array) -> Array:
    """erfc on ``MIDDLE <= y <= ONE`` (0 < erfc < 2e-8 there)."""
    inv = 1.0 / (y * y)
    return (INV_SQRT_PI - inv * ratio(inv, R3)) / y * array_namespace(y).exp(-(y * y))


def erf(x: Array) -> Array:
    """The error function, elementwise, in ``x``'s dtype (half precision through float32).

    Accurate to about 1e-16 relative in float64 and to a few float32 ulps in float32. Every
    range is evaluated on clamped copies of ``x`` and the results selected, so the function
    stays branch-free (traceable) and never overflows: ``erf(+-inf) = +-1``, NaN gives NaN.
    """
    xp = array_namespace(x)
    if getattr(x.dtype, "itemsize", 0) == 2 and getattr(x.dtype, "name", "") in _HALF:
        return xp.astype(erf(xp.astype(x, xp.float32)), x.dtype)
    y = xp.minimum(xp.abs(x), ONE)  # NaN stays NaN
    small = xp.minimum(xp.maximum(x, -SMALL), SMALL)
    erfc = xp.where(y <= MIDDLE, erfc_middle(y), erfc_tail(xp.maximum(y, MIDDLE)))
    big = (0.5 - erfc) + 0.5
    return xp.where(y <= SMALL, erf_small(small), xp.where(x < 0, -big, big))
