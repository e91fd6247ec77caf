""":class:`TerminateOnNaN`: stop at the first batch whose loss is not finite."""

from __future__ import annotations

import math

from wframe.callbacks.base import Callback


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or inf (as Keras').

    ``fit`` already stops on a non-finite loss at its next sync point and keeps the last finite
    weights; this callback makes it check every batch.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training", flush=True)
            self.model.stop_training = True
