"""``CupyBackend.jit``: a function of static shapes recorded once as a CUDA graph and replayed.

Per combination of argument shapes and dtypes (plus the values of static and non-array
arguments) the first call runs eagerly: it compiles the kernels and fills the memory pool. The
second is captured (``Stream.begin_capture`` ... ``end_capture`` on a private non-blocking stream,
relaxed mode, as CuPy's own tests do) and launched; later calls copy their inputs into the
graph's buffers and launch it: one driver call instead of one launch per operation.

Buffers. A replayed graph reads and writes the addresses it was captured with, so:

* donated arguments (``donate_argnums``) are copied into buffers owned by the graph, updated
  there in place, and handed out as *views* of them; passing those views back costs no copy.
  Before a replay overwrites them, a view handed out earlier and not passed back must be gone
  (a weak reference says so); if it is still held, the function is captured again with new
  buffers, so that an array a user holds is never changed;
* other arrays passed as the same object as in the first call (a dataset) are read in place;
  the ones that change from call to call (batches) are copied into buffers of the graph;
* Python ``bool``/``int`` arguments become 0-d device arrays that each call fills (as
  ``jax.jit`` traces them); other non-array arguments are part of the key, so their values
  may be baked in;
* every other output is returned as a copy: nothing the user holds aliases graph memory.

Memory. Everything allocated while capturing comes from a private ``cupy.cuda.MemoryPool`` kept
with the graph (``cupy.cuda.using_allocator``, thread-local): blocks freed during the capture are
reused by later operations *of the same graph* only, and no eager code ever gets an address the
graph writes (the default pool would hand them out again). ``cudaMalloc`` during a relaxed-mode
capture is allowed, so the pool grows as needed; the eager first call compiled every kernel.

Fallback. Whatever a capture cannot record raises while capturing: a host read (``float(x)``,
``bool(x)``, ``.item()``: CuPy refuses synchronous copies on a capturing stream), cuRAND,
cuSOLVER, a matmul the capture-safe ``matmul`` does not cover. The capture is then abandoned, the
reason logged at DEBUG on the ``"wframe"`` logger, and that key runs eagerly from then on. As with
``jax.jit``, Python side effects of the function happen at capture, not at replays.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wframe")
_state = threading.local()  # .keep: the capturing thread's list of what its graph keeps


def capturing() -> bool:
    """Whether this thread is capturing a CUDA graph (``cupy_xp.capture_mode``)."""
    return getattr(_state, "keep", None) is not None


@contextlib.contextmanager
def marked_capturing(keep: list):
    """Mark this thread as capturing for the block: :func:`capturing` is true, and what
    :func:`keep_alive` is given goes into ``keep``, which the graph holds."""
    _state.keep = keep
    try:
        yield
    finally:
        _state.keep = None


def keep_alive(obj: Any) -> None:
    """Keep ``obj`` (a host buffer a graph node reads) as long as the graph this thread is
    capturing."""
    _state.keep.append(obj)


MAX_ENTRIES = 16  # graphs per compiled function; further shapes run eagerly
MAX_CAPTURES = 8  # captures of one key (after bindings changed) before it stays eager
_INT64 = (-(2**63), 2**63 - 1)


def _flatten(tree: Any, leaves: list) -> Any:
    """Append ``tree``'s leaves to ``leaves``; return its structure (hashable)."""
    if isinstance(tree, dict):
        return ("d", tuple(tree), tuple(_flatten(v, leaves) for v in tree.values()))
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return ("n", type(tree), tuple(_flatten(v, leaves) for v in tree))
    if isinstance(tree, (tuple, list)):
        return ("t" if isinstance(tree, tuple) else "l", tuple(_flatten(v, leaves) for v in tree))
    if tree is None:
        return None
    leaves.append(tree)
    return "*"


def _build(struct: Any, leaves: Any) -> Any:
    """The tree of ``struct`` with the leaves taken in order from the iterator ``leaves``."""
    if struct == "*":
        return next(leaves)
    if struct is None:
        return None
    if struct[0] == "d":
        return dict(zip(struct[1], [_build(s, leaves) for s in struct[2]], strict=True))
    if struct[0] == "n":
        return struct[1](*[_build(s, leaves) for s in struct[2]])
    children = [_build(s, leaves) for s in struct[1]]
    return tuple(children) if struct[0] == "t" else children


def _promoted(leaf: Any) -> bool:
    """Python bools and ints become device scalars (their values are not part of the key)."""
    return type(leaf) is bool or (type(leaf) is int and _INT64[0] <= leaf <= _INT64[1])


class _Entry:
    """One key's state: its first call, then its graph, buffers and outputs."""

    def __init__(self, leaves: list, out_sig: Any, rt: Any):
        self.first = [weakref.ref(x) if rt.is_array(x) else None for x in leaves]
        self.bindable = [True] * len(leaves)
        self.out_sig = out_sig
        self.graph = None
        self.failed = False
        self.captures = 0
        self.lent: dict[int, Any] = {}


class GraphJit:
    """``fn`` compiled as :mod:`this module <wframe.backends.cupy_graph>` describes.

    ``runtime`` does the device work (:class:`CupyRuntime`; the tests use a NumPy stand-in).
    ``stats`` counts calls by how they ran and ``reasons`` keeps the last fallback reasons.
    """

    def __init__(self, fn: Callable, runtime: Any, static_argnums=(), donate_argnums=()):
        self._fn, self._rt = fn, runtime
        self._static, self._donate = frozenset(static_argnums), frozenset(donate_argnums)
        self._entries: dict = {}
        self._lock = threading.RLock()
        self.stats = {"eager": 0, "captures": 0, "replays": 0, "fallbacks": 0}
        self.reasons: list[str] = []
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "fn")

    def __call__(self, *args, **kwargs):
        if kwargs or self._rt.capturing():  # keywords: eager; inside a capture: recorded by it
            self.stats["eager"] += bool(kwargs)
            return self._fn(*args, **kwargs)
        with self._lock:
            return self._call(args)

    def _note(self, message: str) -> None:
        log.debug("wframe cuda graph of %s: %s", self.__name__, message)
        self.reasons = [*self.reasons[-7:], message]

    def _eager(self, args):
        self.stats["eager"] += 1
        return self._fn(*args)

    def _call(self, args):
        leaves: list = []
        owners: list[int] = []
        structs = []
        for pos, a in enumerate(args):
            if pos not in self._static:
                start = len(leaves)
                structs.append(_flatten(a, leaves))
                owners += [pos] * (len(leaves) - start)
        try:
            sig = tuple(self._signature(x) for x in leaves)
            key = (tuple(structs), tuple(a for i, a in enumerate(args) if i in self._static), sig)
            entry = self._entries.get(key)
        except TypeError:  # an unhashable non-array argument: nothing to key a graph by
            return self._eager(args)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self._note(f"more than {MAX_ENTRIES} shapes; this one runs eagerly")
                return self._eager(args)
            out = self._fn(*args)
            self._entries[key] = _Entry(leaves, self._out_signature(out), self._rt)
            self.stats["eager"] += 1
            return out
        if entry.failed:
            return self._eager(args)
        copies = None if entry.graph is None else self._plan(entry, leaves)
        if copies is None:
            if entry.captures >= MAX_CAPTURES:
                entry.failed, entry.graph = True, None
                self._note(f"captured {MAX_CAPTURES} times (its inputs keep changing); eager now")
                return self._eager(args)
            if not self._capture(entry, args, leaves, owners, structs):
                return self._eager(args)
        else:
            rt = self._rt
            for i in copies:
                kind, buf = entry.slots[i]
                rt.fill(buf, leaves[i]) if kind == "scalar" else rt.copy_into(buf, leaves[i])
            rt.launch(entry.graph)
            self.stats["replays"] += 1
        return self._outputs(entry, leaves)

    def _signature(self, leaf):
        if self._rt.is_array(leaf):
            return ("a", tuple(leaf.shape), str(leaf.dtype))
        if _promoted(leaf):
            return ("b",) if type(leaf) is bool else ("i",)
        hash(leaf)  # a TypeError for unhashable values
        return ("v", type(leaf), leaf)

    def _out_signature(self, out):
        leaves: list = []
        struct = _flatten(out, leaves)
        rt = self._rt
        sigs = [(tuple(x.shape), str(x.dtype)) if rt.is_array(x) else type(x) for x in leaves]
        return struct, tuple(sigs)

    def _capture(self, entry, args, leaves, owners, structs) -> bool:
        rt = self._rt
        if entry.graph is not None:  # its last launch may still read what it keeps
            rt.synchronize()
        # Release the old graph and its pool; views handed out keep their buffers alive.
        entry.graph, entry.keep, entry.lent = None, None, {}
        slots, call = [], []
        for i, (leaf, pos) in enumerate(zip(leaves, owners, strict=True)):
            if rt.is_array(leaf):
                first = entry.first[i]
                if pos not in self._donate and entry.bindable[i] and first() is leaf:
                    slots.append(("bound", weakref.ref(leaf)))
                    call.append(leaf)
                    continue
                buf = rt.empty_like(leaf)
                rt.copy_into(buf, leaf)
                slots.append(("donated" if pos in self._donate else "staged", buf))
            elif _promoted(leaf):
                buf = rt.scalar(leaf)
                slots.append(("scalar", buf))
            else:
                slots.append(("const", None))
                call.append(leaf)
                continue
            call.append(buf)
        it, call_args = iter(call), list(args)
        dynamic = [p for p in range(len(args)) if p not in self._static]
        for p, struct in zip(dynamic, structs, strict=True):
            call_args[p] = _build(struct, it)
        entry.captures += 1
        try:
            graph, out, keep = rt.capture(self._fn, call_args)
        except Exception as e:  # any failure: this key runs eagerly, the reason is logged
            entry.failed = True
            self.stats["fallbacks"] += 1
            self._note(f"capture failed ({type(e).__name__}: {e}); running eagerly")
            return False
        if self._out_signature(out) != entry.out_sig:
            entry.failed = True
            self.stats["fallbacks"] += 1
            self._note("the captured outputs' shapes or dtypes differ from the eager call's")
            return False
        out_leaves: list = []
        entry.out_struct = _flatten(out, out_leaves)
        where = {id(x): i for i, x in enumerate(call) if rt.is_array(x)}
        entry.out_kinds = [
            (slots[where[id(o)]][0], where[id(o)])
            if id(o) in where
            else ("fresh" if rt.is_array(o) else "value", None)
            for o in out_leaves
        ]
        entry.out_leaves, entry.slots, entry.graph, entry.keep = out_leaves, slots, graph, keep
        self.stats["captures"] += 1
        rt.launch(graph)
        return True

    def _plan(self, entry, leaves) -> list[int] | None:
        """The slots to copy before a replay, or ``None`` when the graph must be captured again
        (a read-in-place argument changed, or an earlier donated output is still held)."""
        ours = {}
        for i, (kind, buf) in enumerate(entry.slots):
            if kind == "donated":
                ours[id(buf)] = i
                view = entry.lent.get(i)
                view = view() if view is not None else None
                if view is not None:
                    ours[id(view)] = i
        copies = []
        for i, (kind, buf) in enumerate(entry.slots):
            leaf = leaves[i]
            if kind == "donated":
                owner = ours.get(id(leaf))
                if owner == i:  # passed back: consumed, updated in place
                    continue
                lent = entry.lent.get(i)
                if owner is not None or (lent is not None and lent() is not None):
                    return None
                copies.append(i)
            elif kind == "bound":
                if buf() is not leaf:
                    entry.bindable[i] = False  # it changes: copy it from now on
                    return None
            elif kind != "const":
                copies.append(i)
        return copies

    def _outputs(self, entry, leaves):
        rt, out, handed = self._rt, [], {}
        for o, (kind, i) in zip(entry.out_leaves, entry.out_kinds, strict=True):
            if kind == "donated":
                view = handed.get(i)
                if view is None:
                    lent = entry.lent.get(i)
                    passed = leaves[i]  # returned as itself when it was passed back
                    view = passed if lent is not None and lent() is passed else None
                    view = handed[i] = view if view is not None else rt.view(entry.slots[i][1])
                    entry.lent[i] = weakref.ref(view)
                out.append(view)
            elif kind in ("staged", "bound", "scalar"):
                out.append(leaves[i])  # an input returned as is: the caller's own object
            elif kind == "fresh":
                out.append(rt.copy(o))
            else:
                out.append(o)
        return _build(entry.out_struct, iter(out))


class CupyRuntime:
    """The device side of :class:`GraphJit` on CuPy.

    Args:
      cupy: the ``cupy`` module.
      capture_mode: ``keep -> context manager`` that prepares this thread's library handles and
        marks it as capturing (``cupy_xp.capture_mode``; passed in, as that module imports this
        one).
    """

    def __init__(self, cupy: Any, capture_mode: Callable[[list], Any]):
        self._cp, self._capture_mode = cupy, capture_mode
        self._streams: dict[int, Any] = {}

    def is_array(self, a) -> bool:
        return isinstance(a, self._cp.ndarray)

    def capturing(self) -> bool:
        return capturing()

    def empty_like(self, a):
        return self._cp.empty(a.shape, dtype=a.dtype)

    def copy_into(self, dst, src) -> None:
        if src.flags.c_contiguous:  # a cudaMemcpyAsync on the current stream
            dst.data.copy_from_device_async(src.data, src.nbytes)
        else:
            self._cp.copyto(dst, src)

    def copy(self, a):
        return a.copy()

    def view(self, a):
        return a.view()

    def scalar(self, value):
        return self._cp.asarray(value, dtype=bool if type(value) is bool else self._cp.int64)

    def fill(self, buf, value) -> None:
        buf.fill(value)

    def launch(self, graph) -> None:
        graph.launch()  # on the current stream: ordered after the input copies

    def synchronize(self) -> None:
        self._cp.cuda.get_current_stream().synchronize()

    def capture(self, fn, args):
        """Record ``fn(*args)``: ``(graph, outputs, what the graph must keep alive)``."""
        cp = self._cp
        device = cp.cuda.Device().id
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = cp.cuda.Stream(non_blocking=True)
        pool = cp.cuda.MemoryPool()
        keep: list = [pool]
        # capture_mode first: it makes the cuBLAS handle and workspace, from the default pool.
        with self._capture_mode(keep), cp.cuda.using_allocator(pool.malloc), stream:
            stream.begin_capture()
            try:
                out = fn(*args)
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                raise
            graph = stream.end_capture()
        return graph, out, keep
