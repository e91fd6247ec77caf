"""Callbacks: code that ``fit`` calls at the start and end of training, epochs and batches.

The hook names and signatures are Keras': ``on_epoch_end(self, epoch, logs=None)`` and so on;
``self.model`` is the model being trained, and setting ``self.model.stop_training = True`` ends
``fit`` after the current batch. Logs hold host floats. Per-batch logs cost a device sync on JAX,
so ``fit`` reads them at every batch only when some callback overrides a batch hook
(:attr:`Callback.needs_batch_logs`); otherwise it reads the running losses at the progress bar's
refresh interval and at the end of each epoch.

Between epochs callbacks may assign ``self.model.params``, ``state`` and ``opt_state`` (the
model's current arrays at that point), and training goes on with what they assigned; those with
:attr:`Callback.needs_weights` may do so after each batch too. That is how
:class:`EarlyStopping` restores the best weights and how :class:`ReduceLROnPlateau` and
:class:`LearningRateScheduler` change a learning rate kept in the optimizer state
(:func:`wframe.optimizers.inject_hyperparams`; an optimizer given by name has one).

One module per callback, as Keras': ``base`` (:class:`Callback`), ``callback_list``,
``history``, ``progress``, ``terminate_on_nan``, ``monitor`` (what the two monitoring callbacks
share), ``early_stopping``, ``reduce_lr_on_plateau``, ``learning_rate_scheduler``,
``learning_rate_monitor``, ``gradient_monitor``, ``csv_logger``, ``tensorboard``,
``lambda_callback``, ``model_checkpoint`` and ``backup_and_restore`` (these two write files
through :mod:`wframe.saving.checkpoint`).

A callback that keeps state across epochs (a patience counter, a best value, a schedule's
position) says what it is with :meth:`Callback.get_state` (JSON values) and takes it back with
:meth:`Callback.set_state`: :class:`BackupAndRestore` stores every such state in its backup,
with the running sums of the epoch in progress (:mod:`~wframe.callbacks.fit_state`), so that a
resumed ``fit`` is the uninterrupted one (``state`` holds the checks their ``set_state`` use).

Per-parameter gradient statistics travel apart from the logs: a callback with
:attr:`Callback.needs_grad_stats` makes ``fit`` compile them into the train step, and every
callback overriding :meth:`Callback.on_grad_stats` gets them after each compiled call
(:class:`GradientMonitor`, :class:`TensorBoard`).
"""

from wframe.callbacks.backup_and_restore import BackupAndRestore
from wframe.callbacks.base import Callback, Logs
from wframe.callbacks.callback_list import CallbackList
from wframe.callbacks.csv_logger import CSVLogger
from wframe.callbacks.early_stopping import EarlyStopping
from wframe.callbacks.gradient_monitor import GradientMonitor
from wframe.callbacks.history import History
from wframe.callbacks.lambda_callback import LambdaCallback
from wframe.callbacks.learning_rate_monitor import LearningRateMonitor
from wframe.callbacks.learning_rate_scheduler import LearningRateScheduler
from wframe.callbacks.model_checkpoint import ModelCheckpoint
from wframe.callbacks.monitor import MonitorCallback
from wframe.callbacks.progress import ProgressBar
from wframe.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from wframe.callbacks.tensorboard import TensorBoard
from wframe.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "GradientMonitor",
    "History",
    "LambdaCallback",
    "LearningRateMonitor",
    "LearningRateScheduler",
    "Logs",
    "ModelCheckpoint",
    "MonitorCallback",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
