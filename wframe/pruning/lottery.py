"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019, "The
Lottery Ticket Hypothesis"; Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
Ticket Hypothesis", for rewinding to an early step).

Round ``r`` trains the model (the user's ``fit`` arguments), evaluates it, then prunes a
fraction ``rate`` of the weights still there (:func:`~wframe.pruning.prune`, global or per
layer: each round's mask is a subset of the last) and *rewinds* the survivors to the values
they had at the rewind point: initialisation (``rewind_step=0``) or ``rewind_step`` optimizer
steps into round 0. Rewinding restores exactly the recorded arrays (params and layer state)
and the model's step and epoch counters, and goes on where round 0 stood at that step (same
data order, same dropout masks, the rest of that epoch first); the optimizer state starts
afresh each round (its step count too, so a learning-rate schedule restarts). The controls of
the paper run from the same start as each round's ticket: ``reinit`` keeps the ticket's masks
with weights drawn again from the initializers (another seed), ``random_masks`` keeps the
rewind weights under random masks of the same per-param sparsity.

With ``directory``, each completed round is saved (:mod:`wframe.saving.checkpoint` files plus
the rows in their metadata): a rerun with the same folder and settings continues after the last
completed round, bit for bit on NumPy; with more ``rounds`` it extends the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from wframe.backends import to_numpy, use_backend
from wframe.callbacks import Callback
from wframe.pruning.lottery_files import RewindPoint, RunFolder
from wframe.pruning.masks import (
    Selector,
    check_fraction,
    check_int,
    check_scope,
    check_selector,
    prune,
    selected,
)
from wframe.saving.config import ConfigError
from wframe.tree import flatten, map_at, tree_map
from wframe.types import TrainState


class IterativeMagnitudePruning:
    """Find lottery tickets by iterative magnitude pruning with rewinding (module docstring).

    Args:
      model: a built model (``wf.Sequential`` or graph), compiled or given an ``optimizer`` in
        the ``fit`` arguments; its current weights are the initialisation.
      rounds: training rounds; round ``r`` runs at sparsity ``1 - (1 - rate) ** r`` of the
        selected weights (times what masks the model already had).
      rate: the fraction of the remaining weights each round prunes (0.2 in the paper).
      rewind_step: ``0`` rewinds to the initial weights; ``k`` to those after ``k`` optimizer
        steps of round 0 (recorded at the first batch hook at or after step ``k``: a multiple
        of ``steps_per_execution``).
      scope, include, exclude, exclude_bias: which weights and how, as :func:`prune`.
      reinit: also train, from each round's start, the ticket's masks with re-drawn weights.
      random_masks: also train random masks of each param's sparsity with the rewind weights.
      control_seed: the seed of the controls' draws (round ``r`` uses ``control_seed + r``);
        default ``model.seed + 1``.
      directory: a folder to save each completed round in and to resume from.
      print_fn: called with a line per finished row (``None``: silent).
    """

    def __init__(
        self,
        model: Any,
        *,
        rounds: int,
        rate: float = 0.2,
        rewind_step: int = 0,
        scope: str = "global",
        include: Selector = None,
        exclude: Selector = None,
        exclude_bias: bool = True,
        reinit: bool = False,
        random_masks: bool = False,
        control_seed: int | None = None,
        directory: str | os.PathLike | None = None,
        print_fn: Callable[[str], Any] | None = None,
    ):
        what = "IterativeMagnitudePruning"
        self.model = model
        self.rounds = check_int(rounds, f"{what}: rounds", 1)
        self.rate = check_fraction(rate, f"{what}: rate")
        if self.rate == 0:
            raise ValueError(f"{what}: rate must be > 0 (a fraction of weights to prune)")
        self.rewind_step = check_int(rewind_step, f"{what}: rewind_step", 0)
        self.scope = check_scope(scope, what)
        check_selector(include, f"{what}: include")
        check_selector(exclude, f"{what}: exclude")
        self.include, self.exclude, self.exclude_bias = include, exclude, exclude_bias
        for name, flag in (("reinit", reinit), ("random_masks", random_masks)):
            if not isinstance(flag, bool):
                raise TypeError(f"{what}: {name} must be True or False, got {flag!r}")
        self.reinit, self.random_masks = reinit, random_masks
        self.names = selected(model, include, exclude, exclude_bias, what)  # built, names ok
        if control_seed is not None:
            control_seed = check_int(control_seed, f"{what}: control_seed", 0)
        self.control_seed = control_seed
        self.directory = None if directory is None else os.fspath(directory)
        self.print_fn = print_fn
        #: One dict per trained model: ``round``, ``kind`` (``"ticket"``, ``"reinit"``,
        #: ``"random_masks"``), ``sparsity`` (of the selected weights), ``steps`` (trained),
        #: ``seconds`` and the ``evaluate`` logs (``loss``, ``accuracy``, ...).
        self.rows: list[dict] = []
        #: ``masks[r]``: round ``r``'s masks of the selected params (host booleans), for the
        #: rounds run in this process (and round 0's).
        self.masks: dict[int, dict[str, np.ndarray]] = {}
        #: The :class:`RewindPoint` (known once round 0 reached ``rewind_step``).
        self.rewind: RewindPoint | None = None

    # ------------------------------------------------------------------ the rounds
    def run(self, x: Any, y: Any = None, *, eval_data: tuple | None = None, **fit_kwargs):
        """Run the rounds not done yet and return :attr:`rows`.

        Args:
          x, y: training data, as ``fit`` takes it.
          eval_data: ``(x, y)`` each trained model is evaluated on (``model.evaluate``);
            default: ``fit``'s ``validation_data`` if given, else the training data.
          **fit_kwargs: ``fit``'s arguments (``epochs``, ``batch_size``, ``callbacks``,
            ``optimizer``, ``validation_data``, ...), the same for every round.

        Returns:
          :attr:`rows`; the model ends holding the last round's trained ticket and its masks
          (its optimizer state restarts).
        """
        if eval_data is None:
            eval_data = fit_kwargs.get("validation_data") or (x, y)
        start = self._resume()
        if start == 0:
            self.rows, self.masks = [], {}
            self.rewind = self._snapshot() if self.rewind_step == 0 else None
        controls = [
            k for k, on in (("reinit", self.reinit), ("random_masks", self.random_masks)) if on
        ]
        for r in range(start, self.rounds):
            if r > 0:
                self._next_round(r)
            self.masks[r] = self._host_masks()
            for kind in controls if r > 0 else ():
                self._control(kind, r, x, y, eval_data, fit_kwargs)
            self._train("ticket", r, x, y, eval_data, fit_kwargs)
            self.model.opt_state = None
            self._save(r + 1)
        return self.rows

    def _train(self, kind: str, r: int, x, y, eval_data, fit_kwargs) -> None:
        """One ``fit`` from the current start (recording the rewind point in round 0), its
        evaluation, and the row."""
        model, capture = self.model, None
        callbacks = list(fit_kwargs.get("callbacks") or [])
        if self.rewind is None:
            capture = _Capture(model.steps, model.epochs, self.rewind_step)
            callbacks.append(capture)
        steps, clock = model.steps, time.perf_counter()
        model.fit(x, y, **{**fit_kwargs, "callbacks": callbacks})
        seconds = time.perf_counter() - clock
        if capture is not None:
            if capture.point is None or capture.point.steps >= model.steps:
                raise ValueError(
                    f"IterativeMagnitudePruning: rewind_step={self.rewind_step} is not before "
                    f"the end of round 0 ({model.steps - steps} steps); train longer or rewind "
                    "earlier"
                )
            self.rewind = capture.point
        xe, ye = eval_data if isinstance(eval_data, (tuple, list)) else (eval_data, None)
        logs = model.evaluate(xe, ye)
        row = {"round": r, "kind": kind, "sparsity": self._sparsity()}
        row.update(steps=model.steps - steps, seconds=seconds, **logs)
        self.rows.append(row)
        if self.print_fn is not None:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            self.print_fn(f"round {r} {kind}: sparsity {row['sparsity']:.2%}, {metrics}")

    def _next_round(self, r: int) -> None:
        """Prune the trained model to round ``r``'s sparsity and rewind the survivors."""
        start = self._initial_sparsity()
        target = 1 - (1 - start) * (1 - self.rate) ** r
        prune(
            self.model,
            target,
            scope=self.scope,
            include=self.include,
            exclude=self.exclude,
            exclude_bias=self.exclude_bias,
        )
        self._start(self.rewind.params, self.rewind.state, self._host_masks())

    def _control(self, kind: str, r: int, x, y, eval_data, fit_kwargs) -> None:
        """Train round ``r``'s ``kind`` control from the round's start, then set it again."""
        masks = self.masks[r]
        if kind == "reinit":
            params, state = self._redrawn(self._control_seed() + r)
            self._start(params, state, masks)
        else:
            rng = np.random.default_rng([self._control_seed(), r])
            self._start(self.rewind.params, self.rewind.state, _random_like(masks, rng))
        self._train(kind, r, x, y, eval_data, fit_kwargs)
        self._start(self.rewind.params, self.rewind.state, masks)

    def _control_seed(self) -> int:
        """``control_seed``, default the model's seed + 1 (a resumed run's: the file's)."""
        return self.model.seed + 1 if self.control_seed is None else self.control_seed

    # ------------------------------------------------------------------ arrays
    def _snapshot(self) -> RewindPoint:
        model = self.model
        params, state = model.backend.to_host((model.params, model.state))
        return RewindPoint(params, state, model.steps, model.epochs, None)

    def _start(self, params: dict, state: dict, masks: dict[str, np.ndarray]) -> None:
        """Make the model hold ``params`` under ``masks`` (zeros where a mask is 0), ``state``,
        the rewind point's counters and resume position, and no optimizer state."""
        model, point = self.model, self.rewind
        fns = {n: (lambda a, m=m: np.where(m, a, np.zeros((), a.dtype))) for n, m in masks.items()}
        move = model.backend.asarray
        arrays = TrainState(
            tree_map(move, map_at(params, fns)), tree_map(move, state), None, None, None
        )
        model.commit(arrays, steps=point.steps, epochs=point.epochs)
        model.masks = masks if any(not m.all() for m in masks.values()) else None
        model.resume_at = point.resume_at

    def _host_masks(self) -> dict[str, np.ndarray]:
        """The selected params' masks (all True where there is none yet), on the host."""
        flat, masks = dict(flatten(self.model.params)), self.model.masks or {}
        out = {}
        for name in self.names:
            m = masks.get(name)
            out[name] = np.ones(flat[name].shape, bool) if m is None else _host(m) != 0
        return out

    def _sparsity(self) -> float:
        return _sparsity_of(self._host_masks())

    def _initial_sparsity(self) -> float:
        return _sparsity_of(self.masks[0])

    def _redrawn(self, seed: int) -> tuple[dict, dict]:
        """Params and state of a fresh model of the same config drawn with ``seed``."""
        model = self.model
        try:
            config = dict(model.get_config(), seed=seed)
        except ConfigError as e:
            raise ValueError(
                f"IterativeMagnitudePruning: reinit draws new weights from {model.label}'s "
                f"config, which cannot be written: {e}. Give activations and initializers by name"
            ) from None
        with use_backend(model.backend):
            fresh = type(model).from_config(config)
            if not fresh.built:
                fresh.build(model.input_shape)
        return fresh.backend.to_host((fresh.params, fresh.state))

    # ------------------------------------------------------------------ files
    def _settings(self) -> dict:
        return {
            "rate": self.rate,
            "rewind_step": self.rewind_step,
            "scope": self.scope,
            "include": repr(self.include),
            "exclude": repr(self.exclude),
            "exclude_bias": self.exclude_bias,
            "reinit": self.reinit,
            "random_masks": self.random_masks,
            "control_seed": self.control_seed,
        }

    def _save(self, completed: int) -> None:
        if self.directory is not None:
            folder, settings = RunFolder(self.directory), self._settings()
            folder.save(self.model, self.rewind, self.masks[0], self.rows, settings, completed)

    def _resume(self) -> int:
        """Load a saved run from :attr:`directory` (checked against these settings); the
        number of rounds it completed (0: none saved, start afresh)."""
        if self.directory is None:
            return 0
        saved = RunFolder(self.directory).load(self.model, self._settings())
        if saved is None:
            return 0
        self.rewind, masks0, self.rows, completed = saved
        flat = dict(flatten(self.model.params))  # round 0's masks; later ones come back as run
        self.masks = {0: {n: masks0.get(n, np.ones(flat[n].shape, bool)) for n in self.names}}
        return min(completed, self.rounds)


class _Capture(Callback):
    """Records the rewind point: the arrays and counters after ``k`` steps of round 0."""

    needs_weights = True  # fit publishes each step's arrays before the batch hook

    def __init__(self, steps0: int, epochs0: int, k: int):
        self.steps0, self.epochs0, self.k = steps0, epochs0, k
        self.point: RewindPoint | None = None
        self.first = self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.first = epoch if self.first is None else self.first
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        if self.point is not None or model.steps - self.steps0 < self.k:
            return
        params, state = model.backend.to_host((model.params, model.state))
        fit_epoch, done = self.epoch, batch + 1
        life_epoch = self.epochs0 + fit_epoch - self.first
        per_epoch = self.params.get("steps")
        if per_epoch is not None and done >= per_epoch:  # the last batch: next epoch afresh
            fit_epoch, done, life_epoch = fit_epoch + 1, 0, life_epoch + 1
        resume = None if (fit_epoch, done) == (self.first, 0) else (fit_epoch, done)
        self.point = RewindPoint(params, state, model.steps, life_epoch, resume)


def _host(a: Any) -> np.ndarray:
    return np.asarray(to_numpy(a))


def _sparsity_of(masks: dict[str, np.ndarray]) -> float:
    """The fraction of zeros over all of ``masks``."""
    return 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())


def _random_like(masks: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    """Random masks with as many ones per param as ``masks``."""
    out = {}
    for name, m in masks.items():
        keep = np.zeros(m.size, bool)
        keep[rng.permutation(m.size)[: int(m.sum())]] = True
        out[name] = keep.reshape(m.shape)
    return out
