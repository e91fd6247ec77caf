"""Training: pure steps (:mod:`.step`), the compiled runner (:mod:`.runner`), the compiled
functions of a model (:mod:`.trainer`), the batch plan (:mod:`.epoch_iterator`), the non-finite
guard (:mod:`.guard`), the callback/array synchronisation (:mod:`.sync`), the fit loop
(:mod:`.loop`), evaluation and per-parameter gradient statistics (:mod:`.grad_stats`)."""

from wframe.optimizers.checks import check_opt_state, check_optimizer
from wframe.training.checks import (
    check_loss_backend,
    warn_all_frozen,
    warn_softmax_with_logits,
)
from wframe.training.evaluate import evaluate, evaluate_batches
from wframe.training.loop import fit
from wframe.training.runner import FitSetup, RunSpec, make_runner
from wframe.training.step import (
    ConsumedStateError,
    log_names,
    make_eval_step,
    make_grad_fn,
    make_train_step,
)
from wframe.training.tracker import Tracker
from wframe.training.trainer import Trainer, forget_shared, trainer_for
from wframe.types import TrainState

__all__ = [
    "ConsumedStateError",
    "FitSetup",
    "RunSpec",
    "TrainState",
    "Tracker",
    "Trainer",
    "trainer_for",
    "check_loss_backend",
    "check_opt_state",
    "check_optimizer",
    "evaluate",
    "evaluate_batches",
    "fit",
    "forget_shared",
    "log_names",
    "make_eval_step",
    "make_grad_fn",
    "make_runner",
    "make_train_step",
    "warn_all_frozen",
    "warn_softmax_with_logits",
]
