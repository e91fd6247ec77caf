"""What an optimizer declares about itself, read by field name.

A named optimizer (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`) declares an
:class:`OptimizerSpec`: its name, the learning rate it was made with, the role of each entry of
its chain's state, and its fused in-place update (:class:`FusedSpec`: which kernel, with which
hyper-parameters), or ``None`` where it has none. :func:`inject_hyperparams` declares an
:class:`InjectedSpec`: the factory and the arguments it was given. The transformation carrying a
declaration is a :class:`DeclaredTransformation`, still the ``(init, update)`` pair of optax.

:func:`wframe.optimizers.fused` dispatches on these fields as ``torch.optim.Adam`` does on its
``fused=`` and ``foreach=`` flags; :func:`wframe.optimizers.learning_rate` reads them too. A
transformation that declares nothing (a chain built by hand, an optax object) gets the generic
path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from wframe.optimizers.base import GradientTransformation, OptState, ScalarOrSchedule


class SgdHyperparams(NamedTuple):
    """What :func:`sgd`'s in-place kernel reads (its factory's argument names).

    Attributes:
      learning_rate: a float or a ``step -> value`` schedule (of the chain's count).
      momentum, nesterov: as given to :func:`sgd`: the momentum decay (``None``: none) and
        whether it is Nesterov's.
    """

    learning_rate: ScalarOrSchedule
    momentum: float | None = None
    nesterov: bool = False


class AdamHyperparams(NamedTuple):
    """What the in-place kernel of :func:`adam` and :func:`adamw` reads.

    Attributes:
      learning_rate: a float or a ``step -> value`` schedule (of the chain's count).
      b1, b2, eps, eps_root: as in :func:`scale_by_adam` (moment decays, denominator terms).
      weight_decay, mask: as in :func:`add_decayed_weights`; ``weight_decay=None`` for Adam,
        whose chain has no decay part.
    """

    learning_rate: ScalarOrSchedule
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    weight_decay: ScalarOrSchedule | None = None  # None: adam, whose chain has no decay part
    mask: Any = None


class RmspropHyperparams(NamedTuple):
    """What :func:`rmsprop`'s in-place kernel reads (neither centered nor bias-corrected).

    Attributes:
      learning_rate: a float or a ``step -> value`` schedule (of the chain's count).
      decay, eps, eps_in_sqrt: as in :func:`scale_by_rms`.
      momentum, nesterov: the momentum applied after the learning rate (``None``: none), as
        :func:`rmsprop`.
    """

    learning_rate: ScalarOrSchedule
    decay: float = 0.9
    eps: float = 1e-8
    eps_in_sqrt: bool = True
    momentum: float | None = None
    nesterov: bool = False


class FusedSpec(NamedTuple):
    """The in-place update an optimizer declares.

    Attributes:
      kind: the backend kernel: ``"sgd"``: ``sgd_inplace``, ``"adam"``: ``adam_inplace`` for
        Adam and AdamW, ``"rmsprop"``: ``rmsprop_inplace``.
      hyperparams: its arguments, by the factory's names. A value may be a schedule, evaluated
        at the count of the chain's ``"learning_rate"`` (or ``"weight_decay"``) state.
    """

    kind: str
    hyperparams: SgdHyperparams | AdamHyperparams | RmspropHyperparams


class OptimizerSpec(NamedTuple):
    """What a named optimizer declares.

    Attributes:
      name: the factory's name (``"adam"``), used in messages.
      learning_rate: the learning rate it was made with: a float, a schedule, or ``None`` for
        Adafactor without one.
      parts: the role of each entry of its chain's state in order (e.g.
        ``("moments", "learning_rate")`` for Adam).
      fused: its in-place update, or ``None``.
      settable: where its learning rate is a number, the :class:`InjectedSpec` (its factory,
        the learning rate injected, every other argument as given) whose state the optimizer
        also updates, so that a callback can make its learning rate settable mid-training
        (:func:`~wframe.optimizers.with_settable_learning_rate`); else ``None``.
      propagates_nonfinite: whether a non-finite gradient entry always gives a non-finite
        update entry (true of every named optimizer but :func:`lion`, whose sign of an
        infinity is finite). Params only ever have updates added, so a step with a non-finite
        gradient then leaves a param that stays non-finite, and a traced ``fit`` checks the
        params once per call instead of the gradients at every step.
    """

    name: str
    learning_rate: ScalarOrSchedule | None
    parts: tuple[str, ...]
    fused: FusedSpec | None = None
    settable: InjectedSpec | None = None
    propagates_nonfinite: bool = False

    def part(self, opt_state: OptState, role: str) -> Any:
        """The state of the part ``role`` (one of :attr:`parts`) in ``opt_state``, the chain's
        tuple of states."""
        return opt_state[self.parts.index(role)]

    def fits(self, opt_state: OptState) -> bool:
        """Whether ``opt_state`` has this optimizer's chain layout (a plain tuple, one entry per
        part; not a named state such as an injected one)."""
        chain = isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields")
        return chain and len(opt_state) == len(self.parts)


class InjectedSpec(NamedTuple):
    """What :func:`inject_hyperparams` made a transformation from.

    Attributes:
      factory: the inner factory (e.g. :func:`adam`).
      static: the arguments passed to it as given.
      numeric: the names of those stored in the state and read back at each update.
      schedules: those recomputed from a schedule of the state's count at each update, name ->
        schedule.
    """

    factory: Callable[..., GradientTransformation]
    static: dict[str, Any]
    numeric: tuple[str, ...]
    schedules: dict[str, Callable]

    def inner_spec(self) -> OptimizerSpec | InjectedSpec | None:
        """The declaration of the inner transformation, as each update makes it (numeric and
        scheduled values stand in as ``0.0``: a declaration does not depend on them)."""
        placeholders = dict.fromkeys((*self.numeric, *self.schedules), 0.0)
        return spec_of(self.factory(**self.static, **placeholders))


Spec = OptimizerSpec | InjectedSpec


class DeclaredTransformation(GradientTransformation):
    """A :class:`GradientTransformation` with a declaration: ``spec``, an
    :class:`OptimizerSpec` or an :class:`InjectedSpec`.

    It is still the pair ``(init, update)``: it unpacks, compares and hashes as one, and optax's
    combinators take it. ``_replace`` gives a plain :class:`GradientTransformation`: a pair with
    another ``init`` or ``update`` is no longer what the spec declares.

    Args:
      init, update: the pair's functions, as for :class:`GradientTransformation`.
      spec: the declaration, or ``None`` (the generic path, as for an undeclared pair).
    """

    spec: Spec | None

    def __new__(cls, init: Callable, update: Callable, spec: Spec | None = None):
        self = super().__new__(cls, init, update)
        self.spec = spec
        return self

    def _replace(self, **changes: Any) -> GradientTransformation:
        return GradientTransformation(**{**self._asdict(), **changes})

    def __repr__(self) -> str:
        pair = f"init={self.init!r}, update={self.update!r}"
        return f"{type(self).__name__}({pair}, spec={self.spec!r})"


def spec_of(tx: Any) -> Spec | None:
    """The declaration of ``tx`` (any object), or ``None`` where it declares none.

    Args:
      tx: an optimizer: a :class:`DeclaredTransformation` carries one; anything else none.
    """
    return tx.spec if isinstance(tx, DeclaredTransformation) else None


def propagates_nonfinite(tx: Any) -> bool:
    """Whether ``tx`` declares that a non-finite gradient entry always makes its update entry
    non-finite (:attr:`OptimizerSpec.propagates_nonfinite`, read through
    :func:`inject_hyperparams`); ``False`` for anything that declares nothing.

    Args:
      tx: an optimizer.
    """
    spec = spec_of(tx)
    if isinstance(spec, InjectedSpec):
        spec = spec.inner_spec()
    return isinstance(spec, OptimizerSpec) and spec.propagates_nonfinite
