"""Gradual pruning during ``fit``: :class:`PruningSchedule` (Zhu & Gupta 2017)."""

from __future__ import annotations

import math
import numbers

from wframe.callbacks import Callback
from wframe.callbacks import state as fields
from wframe.pruning.masks import (
    Selector,
    check_fraction,
    check_int,
    check_scope,
    check_selector,
    prune,
    selected,
)


class PruningSchedule(Callback):
    """A ``fit`` callback that prunes gradually (Zhu & Gupta 2017, "To prune, or not to prune").

    Every ``frequency`` optimizer steps from ``begin_step`` to ``end_step`` it calls
    :func:`prune` with the sparsity
    ``s_t = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** power``,
    reaching ``final_sparsity`` at ``end_step`` (always a pruning step). ``t`` counts the
    model's optimizer steps over its life, across ``fit`` calls. Pruning happens where ``fit``
    calls ``on_train_batch_end``: with ``steps_per_execution=k`` that is once per ``k`` steps
    (once per epoch with ``"epoch"``), so each scheduled step prunes at the first hook at or
    after it, with ``s_t`` of the step the hook sees; steps passed in one call prune once.
    Every step is read from the model's step counter (``model.steps``), so a ``fit`` resumed
    within an epoch by :class:`~wframe.callbacks.BackupAndRestore` prunes at the same steps;
    the backup keeps the schedule's position (:meth:`get_state`: ``end_step``, the next
    pruning step and :attr:`pruned`).

    Args:
      final_sparsity, initial_sparsity: ``s_f`` and ``s_i``, in [0, 1), ``s_i <= s_f``.
      begin_step: the first pruning step.
      end_step: the step that reaches ``final_sparsity``; default: the last step of the first
        ``fit`` the callback runs in (set at its first batch hook).
      frequency: steps between pruning steps (``Δt``).
      power: the exponent (3 in the paper).
      scope, include, exclude, exclude_bias: as in :func:`prune`.
    """

    needs_weights = True  # fit publishes the step's arrays and counters before the batch hook

    def __init__(
        self,
        final_sparsity: float,
        initial_sparsity: float = 0.0,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        power: float = 3,
        *,
        scope: str = "global",
        include: Selector = None,
        exclude: Selector = None,
        exclude_bias: bool = True,
    ):
        what = "PruningSchedule"
        self.final_sparsity = check_fraction(final_sparsity, f"{what}: final_sparsity")
        self.initial_sparsity = check_fraction(initial_sparsity, f"{what}: initial_sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"{what}: initial_sparsity must be <= final_sparsity, got {initial_sparsity} > "
                f"{final_sparsity}"
            )
        self.begin_step = check_int(begin_step, f"{what}: begin_step", 0)
        self.end_step = None
        if end_step is not None:
            self.end_step = check_int(end_step, f"{what}: end_step", self.begin_step + 1)
        self.frequency = check_int(frequency, f"{what}: frequency", 1)
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
            raise ValueError(f"{what}: power must be a number > 0, got {power!r}")
        self.power = float(power)
        self.scope = check_scope(scope, what)
        check_selector(include, f"{what}: include")
        check_selector(exclude, f"{what}: exclude")
        self.include, self.exclude, self.exclude_bias = include, exclude, exclude_bias
        #: ``(step, sparsity)`` of each pruning so far.
        self.pruned: list[tuple[int, float]] = []
        self._next: float | None = None  # the next pruning step (inf: done)
        self._epoch = 0

    def sparsity_at(self, step: int) -> float:
        """The schedule's target ``s_t`` at ``step`` (``t`` clamped to [begin, end]).

        Raises:
          ValueError: ``end_step`` is still unknown (default, before ``fit`` started).
        """
        if self.end_step is None:
            raise ValueError("PruningSchedule: end_step is set when fit starts (or pass it)")
        t = min(max(step, self.begin_step), self.end_step)
        done = (t - self.begin_step) / (self.end_step - self.begin_step)
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_f + (s_i - s_f) * (1.0 - done) ** self.power

    def on_train_begin(self, logs=None):
        # Bad patterns and unbuilt models fail here, before the first step.
        selected(self.model, self.include, self.exclude, self.exclude_bias, "PruningSchedule")

    def get_state(self) -> dict:
        """``end_step``, ``next`` (the next pruning step; ``None`` before the first),
        ``finished`` (past ``end_step``) and ``pruned`` (``[step, sparsity]`` pairs)."""
        done = self._next == math.inf
        return {
            "end_step": self.end_step,
            "next": None if done or self._next is None else int(self._next),
            "finished": done,
            "pruned": [[int(t), float(s)] for t, s in self.pruned],
        }

    def set_state(self, state: dict) -> None:
        who = "PruningSchedule"
        state = fields.fields(state, who, ("end_step", "next", "finished", "pruned"))
        end = fields.integer(
            state["end_step"], f"{who}: end_step", self.begin_step + 1, optional=True
        )
        ahead = fields.integer(state["next"], f"{who}: next", optional=True)
        if not isinstance(state["finished"], bool):
            raise ValueError(f"{who}: finished must be true or false, got {state['finished']!r}")
        pruned = state["pruned"]
        if not isinstance(pruned, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in pruned
        ):
            raise ValueError(f"{who}: pruned must be a list of [step, sparsity] pairs")
        pruned = [
            (fields.integer(t, f"{who}: a pruned step"), check_fraction(s, f"{who}: a sparsity"))
            for t, s in pruned
        ]
        self.end_step, self.pruned = end, pruned
        self._next = math.inf if state["finished"] else ahead

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.steps  # optimizer steps done so far (published with the arrays)
        if self.end_step is None:
            # This fit's last step, from the step counter: the epoch began batch + 1 steps ago
            # (also in an epoch resumed within, where on_epoch_begin came mid-epoch).
            start = step - (batch + 1)
            steps = self.params["steps"] * (self.params["epochs"] - self._epoch)
            self.end_step = max(start + steps, self.begin_step + 1)
        if self._next is None:
            self._next = self.begin_step
        if step < self._next:
            return
        # The next scheduled step after this one: begin + i * frequency, or end_step itself.
        ahead = self.begin_step + ((step - self.begin_step) // self.frequency + 1) * self.frequency
        self._next = min(ahead, self.end_step) if step < self.end_step else math.inf
        sparsity = self.sparsity_at(step)
        prune(
            self.model,
            sparsity,
            scope=self.scope,
            include=self.include,
            exclude=self.exclude,
            exclude_bias=self.exclude_bias,
        )
        self.pruned.append((step, sparsity))
