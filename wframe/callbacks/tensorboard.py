""":class:`TensorBoard`: losses, metrics, learning rate, gradient statistics and weight
histograms as TensorBoard event files, through tensorboardX (no TensorFlow needed)."""

from __future__ import annotations

import os
from typing import Any

from wframe.callbacks.base import Callback, Logs
from wframe.optimizers import learning_rate
from wframe.tree import flatten


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "TensorBoard needs tensorboardX to write event files: pip install 'wframe[viz]' "
            "(or pip install tensorboardX)"
        ) from err
    return SummaryWriter


class TensorBoard(Callback):
    """Write TensorBoard event files under ``log_dir``, with Keras' layout and tags.

    ``log_dir/train`` gets ``epoch_loss``, ``epoch_<metric>`` (``epoch_accuracy``),
    ``epoch_penalty`` ... at step ``epoch``, and ``epoch_learning_rate`` where
    :func:`wframe.optimizers.learning_rate` knows the rate; ``log_dir/validation`` gets the
    ``val_`` logs under the same tags. With ``update_freq="batch"`` or an int ``n``, the train
    writer also gets ``batch_loss``, ... (the epoch's running means, as Keras 3 logs them) after
    every batch, or at the first batch hook at or after each multiple of ``n`` steps of the
    model's life, at step = the model's optimizer step count; ``fit`` then reads the logs at
    every batch (a sync on JAX).

    Every ``histogram_freq`` epochs (epoch 0 included, as Keras) each param's values go to a
    histogram ``<param>/histogram`` (``dense_0/W/histogram``). Gradients: this callback does
    not see the training data, so by default gradient information is the scalar statistics of
    :class:`GradientMonitor` (``grad_norm/<param>``, ``update_ratio/<param>``,
    ``dead_relu/<layer>``), written whenever they are computed: when a GradientMonitor is among
    the callbacks, or when ``write_grads=True`` asks for them here. They are written at each
    compiled call's step count with a batch ``update_freq``, else once per epoch (at step
    ``epoch``, the mean of the epoch's per-call values). Give ``grad_batch=(x, y)`` (a small
    batch) to also get gradient histograms ``<param>/gradient``: at each histogram epoch, one
    :meth:`~wframe.Sequential.value_and_grad` on that batch.

    Args:
      log_dir: the directory of the event files (created if missing).
      histogram_freq: epochs between weight histograms; 0 writes none.
      update_freq: ``"epoch"``, ``"batch"``, or an int number of steps between batch scalars.
      write_grads: compute the per-parameter gradient statistics in the train step (as
        :class:`GradientMonitor` does) to write them; without it they are written only when
        another callback has them computed.
      grad_batch: ``(x, y)`` for gradient histograms, or ``None``.

    Raises:
      ImportError: tensorboardX is not installed (``pip install 'wframe[viz]'``).
      ValueError: for a bad ``histogram_freq`` or ``update_freq``.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        histogram_freq: int = 1,
        update_freq: str | int = "epoch",
        *,
        write_grads: bool = False,
        grad_batch: tuple[Any, Any] | None = None,
    ):
        self._writer_class = _summary_writer()
        bad_freq = isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int)
        if bad_freq or histogram_freq < 0:
            raise ValueError(
                "TensorBoard: histogram_freq must be an int >= 0 (epochs between histograms). "
                f"Received: histogram_freq={histogram_freq!r}"
            )
        if update_freq not in ("epoch", "batch"):
            bad = isinstance(update_freq, bool) or not isinstance(update_freq, int)
            if bad or update_freq < 1:
                raise ValueError(
                    "TensorBoard: update_freq must be 'epoch', 'batch' or an int >= 1 (steps). "
                    f"Received: update_freq={update_freq!r}"
                )
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self.needs_grad_stats = bool(write_grads)
        # Batch summaries are numbered by model.steps, current in the batch hooks only then.
        self.needs_weights = self.update_freq != "epoch"
        self.grad_batch = grad_batch
        self._writers: dict[str, Any] = {}
        self._mark: int | None = None  # the multiples of update_freq already written for
        self._epoch_stats: dict[str, list[float]] = {}

    @property
    def needs_batch_logs(self) -> bool:
        return self.update_freq != "epoch"  # the batch hook writes nothing otherwise: no syncs

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = self._writer_class(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_train_begin(self, logs=None):
        self._mark = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_stats = {}
        if self._mark is None and self.update_freq != "epoch":
            # Here, not in on_train_begin: a BackupAndRestore may set the counters there.
            self._mark = self.model.steps // self.update_freq

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or not logs:
            return
        step = self.model.steps
        if step // self.update_freq > self._mark:
            self._mark = step // self.update_freq
            writer = self._writer("train")
            for name, value in logs.items():
                writer.add_scalar(f"batch_{name}", value, step)

    def on_grad_stats(self, step: int, stats: Logs) -> None:
        if self.update_freq == "epoch":
            for name, value in stats.items():
                self._epoch_stats.setdefault(name, []).append(value)
            return
        writer = self._writer("train")
        for name, value in stats.items():
            writer.add_scalar(name, value, step)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train, validation = self._writer("train"), None
        for name, value in logs.items():
            if name.startswith("val_"):
                validation = validation or self._writer("validation")
                validation.add_scalar(f"epoch_{name[4:]}", value, epoch)
            else:
                train.add_scalar(f"epoch_{name}", value, epoch)
        if "learning_rate" not in logs:
            rate = learning_rate(self.model.optimizer, self.model.opt_state)
            if rate is not None:
                train.add_scalar("epoch_learning_rate", rate, epoch)
        for name, values in self._epoch_stats.items():
            train.add_scalar(name, sum(values) / len(values), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._histograms(train, epoch)
        train.flush()
        if validation is not None:
            validation.flush()

    def _histograms(self, writer: Any, epoch: int) -> None:
        model = self.model
        for name, values in flatten(model.backend.to_host(model.params)):
            writer.add_histogram(f"{name}/histogram", values, epoch)
        if self.grad_batch is not None:
            _, grads = model.value_and_grad(*self.grad_batch)
            for name, values in flatten(model.backend.to_host(grads)):
                if name not in model.frozen:
                    writer.add_histogram(f"{name}/gradient", values, epoch)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
