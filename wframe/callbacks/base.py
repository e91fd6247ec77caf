"""The :class:`Callback` base class: every hook Keras' ``fit`` calls, doing nothing."""

from __future__ import annotations

from typing import Any

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing; override the ones you need.

    ``self.model`` is the model being trained and ``self.params`` holds ``epochs``, ``steps``
    and ``verbose``. Between epochs (``on_epoch_begin``, ``on_epoch_end``) a callback may read
    ``self.model.params``, ``state`` and ``opt_state`` (the current arrays) and assign new ones,
    which training goes on with; ``self.model.optimizer`` is the optimizer, and
    ``self.model.backend.copy(tree)`` makes an owned copy of arrays to keep.
    """

    model: Any = None
    params: dict[str, Any] = {}
    #: True for a callback that reads or assigns the model's arrays or counters in
    #: ``on_train_batch_end``: ``fit`` then publishes the arrays of the step just completed
    #: (and ``model.steps`` with them) before each of those hooks, runs its steps without
    #: consuming them (so they stay valid) and goes on with whatever the hooks assigned. It
    #: costs a sync per call, so it is off by default.
    needs_weights: bool = False
    #: True for a callback that wants per-parameter gradient statistics (:meth:`on_grad_stats`):
    #: ``fit`` then compiles them into the train step and syncs after every compiled call.
    #: Off by default: without such a callback the step computes none of them.
    needs_grad_stats: bool = False
    #: True for a callback that saves what the others did (:class:`BackupAndRestore`): its
    #: ``on_train_begin`` runs before every other callback's (it restores the model they see)
    #: and its other hooks after theirs (a save then holds the arrays and the states the
    #: batch or epoch ended with), wherever it is in the list. ``fit`` gives it
    #: :attr:`fit_state`.
    saves_state: bool = False
    #: The :class:`~wframe.callbacks.fit_state.FitState` of the ``fit`` running, for a callback
    #: with :attr:`saves_state` (``None`` otherwise).
    fit_state: Any = None

    @property
    def needs_batch_logs(self) -> bool:
        """True when a batch hook is overridden: ``fit`` then syncs and reads logs every batch."""
        return overrides(
            self, "on_train_batch_end", "on_batch_end", "on_train_batch_begin", "on_batch_begin"
        )

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def get_state(self) -> dict[str, Any]:
        """What this callback keeps across epochs, as JSON values (numbers, strings, ``None``,
        lists, dicts), for :class:`BackupAndRestore` to store in its backup: a callback that
        overrides it (with :meth:`set_state`) resumes where it stood. The default keeps
        nothing: ``{}``."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`get_state` returned (a resumed ``fit`` calls it after every
        ``on_train_begin``, so it wins over what those reset). Checks everything before it
        assigns anything: ``set_state(get_state())`` changes nothing.

        Raises:
          ValueError: a value of the wrong type or out of range, naming the callback and key;
            here, any state other than ``{}`` (this callback keeps none).
        """
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state to restore; got the keys {sorted(state)}"
            )

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_grad_stats(self, step: int, stats: Logs) -> None:
        """Per-parameter statistics of the compiled call just run, when some callback has
        :attr:`needs_grad_stats` (every callback overriding this hook gets them then).

        Called after each compiled call (``fit(steps_per_execution=k)``: one call per ``k``
        steps, or per epoch), before ``on_train_batch_end``. ``step`` is the number of
        optimizer steps the model has taken after the call; ``stats`` maps
        ``grad_norm/<param>``, ``update_ratio/<param>`` and ``dead_relu/<layer>`` to their
        mean over the call's finite steps (see :class:`GradientMonitor`). They are not in the
        batch or epoch logs.
        """

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_end(batch, logs)


def overrides(cb: Callback, *hooks: str) -> bool:
    """Whether ``cb`` overrides any of ``hooks``, in a subclass or on the instance
    (:class:`LambdaCallback`)."""
    return any(
        getattr(getattr(cb, hook), "__func__", None) is not getattr(Callback, hook)
        for hook in hooks
    )
