"""Data given as an iterable of batches (a generator, a list of ``(x, y)`` tuples, a
``torch.utils.data.DataLoader``): telling it from array data, drawing its batches epoch by
epoch, and preparing the next ones in a background thread while the current step runs.

What is reproducible: the batches and their order are the iterable's (``shuffle`` does not
apply); an epoch is one pass over it, or with ``steps_per_epoch`` that many batches of a stream
that goes on across epochs (an iterable that can be iterated again, such as a list or a
DataLoader, starts a new pass where one ends; a generator or other iterator that ends stops
training). A ``fit`` resumed mid-epoch (``BackupAndRestore``) starts a new pass and skips the
batches the interrupted epoch had done: the same batches only if each pass gives the same ones.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_ITEM, _END, _ERROR = "item", "end", "error"


def is_batches(x: Any) -> bool:
    """Whether ``x`` is an iterable of batches (a generator or other iterator, a DataLoader, a
    list of ``(x, y)`` tuples, any iterable that is not an array) rather than array data (an
    array, anything with ``__array__`` or DLPack, a DataFrame, a dict of arrays by input, a
    list of arrays per input, nested lists of numbers)."""
    if isinstance(x, (str, bytes, dict)) or _array_like(x):
        return False
    if isinstance(x, (list, tuple)):
        return bool(x) and all(_is_batch(b) for b in x)
    return isinstance(x, Iterable)


def _array_like(x: Any) -> bool:
    return any(hasattr(x, a) for a in ("shape", "__array__", "__array_interface__", "__dlpack__"))


def _is_batch(b: Any) -> bool:
    """A batch: ``(x, y)``, ``(x,)``, ``(x, y, w)`` or a dict, ``x`` an array, a dict or a
    list of arrays (nested numbers are not)."""
    if isinstance(b, dict):
        return True
    if not isinstance(b, (tuple, list)) or not 1 <= len(b) <= 3:
        return False
    first = b[0]
    if isinstance(first, (tuple, list)):
        return bool(first) and all(_array_like(a) for a in first)
    return isinstance(first, dict) or _array_like(first)


def unpack(batch: Any, what: str, index: int) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` of a batch as Keras reads one: a tuple or list of one to
    three entries, anything else ``x`` alone (missing entries ``None``)."""
    if isinstance(batch, (tuple, list)):
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                f"{what}: batch {index} is a {type(batch).__name__} of {len(batch)} entries; "
                "each batch must be (x, y) or (x, y, sample_weight) (x: an array, a list or "
                "a dict of arrays per input)"
            )
        return (*batch, None, None)[:3]
    return batch, None, None


class Source:
    """The batches of one iterable for one ``fit`` (or ``evaluate``, ``predict``).

    An epoch is a whole pass (``steps=None``) or ``steps`` batches of a stream that goes on
    across epochs, as Keras' ``EpochIterator``: where a pass ends, an iterable that can be
    iterated again (not an iterator: a list, a DataLoader) starts the next; an iterator that
    ends sets :attr:`ran_out` and the epoch ends short.

    Args:
      data: the iterable.
      what: its name in error messages (``"fit: x"``).
    """

    def __init__(self, data: Iterable, what: str):
        self.data, self.what = data, what
        self.again = not isinstance(data, Iterator)
        try:
            self.length: int | None = len(data)  # type: ignore[arg-type]
        except TypeError:
            self.length = None
        self.ran_out = False
        self._it: Iterator | None = None
        self._fresh = False  # whether ``_it`` is at the start of a pass
        self._passes = 0
        self._first: Any = None

    def peek(self) -> Any:
        """The first batch (to build the model from), drawn again as the first of the next
        epoch."""
        if self._first is None:
            it = self._begin()
            try:
                self._first = next(it)
            except StopIteration:
                raise ValueError(f"{self.what} gave no batches") from None
            self._it, self._fresh = itertools.chain([self._first], it), True
        return self._first

    def restart(self) -> None:
        """Start the next epoch on a new pass if the iterable can be iterated again (as Keras
        begins each validation: the same batches every time); an iterator goes on."""
        if self.again and not self._fresh:
            self._it = None

    def epoch(self, steps: int | None, skip: int = 0) -> Iterator:
        """The batches of one epoch (``steps`` of them, or a whole pass), without its first
        ``skip`` (already done before a resume)."""
        batches = self._pass() if steps is None else self._stream(steps)
        return itertools.islice(batches, skip, None)

    def _begin(self) -> Iterator:
        self._passes += 1
        return iter(self.data)

    def _pass(self) -> Iterator:
        it = self._it if self._fresh else self._begin()
        self._it, self._fresh = None, False
        count = 0
        for batch in it:
            count += 1
            yield batch
        if count == 0:
            used = "" if self.again else " (an iterator or generator is used up after one pass)"
            raise ValueError(
                f"{self.what} gave no batches for this epoch{used}; pass an iterable that "
                "can be iterated again (a list, a DataLoader), or an endless generator with "
                "steps_per_epoch"
            )

    def _stream(self, steps: int) -> Iterator:
        taken = 0
        while taken < steps:
            if self._it is None:
                if not self.again and self._passes:
                    self.ran_out = True
                    return
                self._it, self._fresh = self._begin(), True
            try:
                batch = next(self._it)
            except StopIteration:
                if self._fresh and self.again:
                    raise ValueError(f"{self.what} gave no batches") from None
                self._it = None
                continue
            self._fresh, taken = False, taken + 1
            yield batch


class Prefetch:
    """The items of ``items``, made ``depth`` ahead in a background thread (run in a copy of
    the caller's context, so with the caller's backend) while the caller works on the current
    one; an exception raised making an item is raised where the caller takes that item.
    :meth:`close` (or the end) stops the thread."""

    def __init__(self, items: Iterator, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._produce, items), name="wframe-prefetch", daemon=True
        )
        self._thread.start()

    def _produce(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as e:  # handed to the consumer, raised there
            self._put((_ERROR, e))

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop making items (the one being made is finished first) and wait for the thread."""
        self._done = True
        self._stop.set()
        while True:  # free a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()


def prefetched(source: Source, prepare: Callable, steps: int | None, skip: int = 0) -> Prefetch:
    """``prepare(batch, index)`` of an epoch's batches of ``source``, made ahead."""
    batches = source.epoch(steps, skip)
    return Prefetch(prepare(b, i) for i, b in enumerate(batches, start=skip))
