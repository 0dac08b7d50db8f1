"""Data-parallel training over MPI: K processes ("ranks"), one model each, one update.

Synchronous data parallelism, the allreduce pattern of Horovod and PyTorch's DDP, on the
engine CPU clusters already run: every rank holds the same weights, computes the gradient of
its shard of the global batch, and the gradients are summed across ranks with one allreduce
over one flat contiguous buffer, so every rank applies the same update and the weights stay
identical without ever being sent again. Nothing is pickled: mpi4py's buffer interface
(`Allreduce`, `Bcast`, `Gather` on NumPy arrays) moves raw bytes.

Two layers:

* `average_gradients(grads)` (and `Communicator`) for a training loop of one's own::

      from rnnlab import distributed
      comm = distributed.Communicator()          # MPI.COMM_WORLD
      comm.broadcast_params(model.params)        # start from rank 0's weights
      for step in range(steps):
          x, y = my_shard(step, comm.rank, comm.size)
          f = model.forward(x, training=True)
          loss, d_out = losses.softmax_cross_entropy(f.output, y)
          grads = distributed.average_gradients(model.backward(f, d_out).params, comm)
          opt.update(model.params, grads, state)  # the same update on every rank

  run as ``mpiexec -n 4 python my_loop.py``.

* `DistributedTrainer`, what ``mpiexec -n K rnnlab train TASK ...`` runs: rnnlab.train's
  Trainer with its batches sharded, its gradients reduced, its stop decisions taken together
  and its files written by rank 0 alone.

The extra ``rnnlab[mpi]`` installs mpi4py and the mpich wheel (whose ``mpiexec`` lands next
to the Python that runs rnnlab); on a cluster, mpi4py built against the site's MPI is used
the same way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Collection
from types import FrameType
from typing import Any

import numpy as np

from rnnlab import settings
from rnnlab.train import (
    STOP_SIGNALS,
    Batch,
    NonFiniteError,
    Trainer,
    give_back_signals,
    take_signals,
)

# Set by the launchers in every process they start: MPICH's and Intel MPI's Hydra (PMI_*),
# Open MPI (OMPI_*), Slurm's srun with PMIx (PMIX_RANK; the size comes from MPI itself).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")

# How long a rank waits in a collective for the others before it declares one of them dead
# or hung and aborts every rank (settings.current().mpi_timeout, 600 s unless the variable
# says otherwise). Rank 0 evaluates while the others wait for its decision, so this must
# exceed the longest evaluation.
TIMEOUT_VARIABLE = "RNNLAB_MPI_TIMEOUT"


def launched() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process with others:
    read from the environment, so a plain `rnnlab train` never imports MPI."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) > 1
    return any(name in os.environ for name in _RANK_VARIABLES)


def _mpi():
    """mpi4py's MPI module, MPI started (MPI_Init: importing it does) at the first call.

    MPI_Init waits for every rank the launcher started, and MPICH's mpiexec does not end a
    job whose rank exits before it starts MPI (a node without rnnlab, a rank whose Python
    fails to import it): the others wait in MPI_Init, where no Python signal handler runs
    (nor any thread of Python's: MPI_Init holds the interpreter), until they are ended.
    StartInterrupts, installed before, only noted SIGINT and SIGTERM, so neither a Ctrl-C
    nor `timeout`'s or a plain `kill`'s SIGTERM ended the job: it took SIGKILL. While MPI
    starts, the two do what they do by default instead: end the rank (nothing is written
    yet), and mpiexec then ends the others."""
    if "mpi4py.MPI" in sys.modules:  # (started: by an earlier call, or by the caller)
        return sys.modules["mpi4py.MPI"]
    before: dict[int, Any] = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) != signal.SIG_IGN:  # (an ignored one stays so)
                before[signum] = signal.signal(signum, signal.SIG_DFL)
    except ValueError:  # (not the main thread, which alone sets handlers: left as they are)
        pass
    watchdog = _StartWatch()
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(
            "rnnlab was started by an MPI launcher but mpi4py is not installed; "
            "install it with: pip install 'rnnlab[mpi]'"
        ) from None
    finally:
        watchdog.stop()
        give_back_signals(before)
    return MPI


# The watchdog's program: wait for its stdin to close (MPI started, or the rank ended) at
# most `timeout` seconds; else say `message` and end the rank, SIGTERM then SIGKILL.
_WATCHDOG = """
import os, select, signal, sys
pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], timeout)[0]:
    sys.stderr.write(message)
    sys.stderr.flush()
    for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            break
        if select.select([sys.stdin], [], [], grace)[0]:
            break
"""


class _StartWatch:
    """A watchdog process for the start of MPI (`_mpi`): MPI_Init waits for every rank the
    launcher started, and a rank that ended before it started MPI (a node whose Python
    cannot import rnnlab, a rank killed at its start) left the others there for ever, with
    no Python thread able to run and MPICH's mpiexec not ending the job (seen: a job held
    until killed). The watchdog, a small Python process reading a pipe from this one, ends
    this rank after the collectives' timeout (RNNLAB_MPI_TIMEOUT, 600 s by default) with a
    line saying so; mpiexec then ends the others. MPI started, the pipe closes and the
    watchdog exits; should this rank die, so does the pipe. Where no process can be started
    (a system that refuses one), or off POSIX (Windows' select takes no pipe), MPI starts
    without it, as before."""

    def __init__(self) -> None:
        import subprocess

        self.process: Any = None
        if os.name != "posix" or not sys.executable:  # (an embedding Python may have none)
            return
        try:
            timeout = settings.current().mpi_timeout
        except ValueError:  # (a bad variable, said where the settings are read: not here)
            timeout = settings.DEFAULT_MPI_TIMEOUT
        rank = next((os.environ[v] for v in _RANK_VARIABLES if v in os.environ), "?")
        size = next((os.environ[v] for v in _SIZE_VARIABLES if v in os.environ), "?")
        message = (f"rnnlab: error: rank {rank} of {size} waited {timeout:.0f} s for every rank "
                   "to start MPI (MPI_Init); one of them ended or hangs before starting it. "
                   f"Stopping (the wait is set by {TIMEOUT_VARIABLE}).\n")  # fmt: skip
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(timeout),
                 message], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            pass

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


class Communicator:
    """The ranks of an MPI communicator (default: every process mpiexec started), with the
    few collectives data-parallel training needs, each waiting at most `timeout` seconds.

    MPI's blocking collectives wait forever for a rank that hangs; here each one is started
    non-blocking and polled, so a rank that stopped answering makes the others print one line
    and abort the whole job (MPI_Abort) after `timeout` seconds instead. A rank that dies
    outright is usually noticed sooner by the launcher itself, which then ends the others."""

    def __init__(self, comm=None, timeout: float | None = None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = settings.current().mpi_timeout if timeout is None else float(timeout)
        self.where = ""  # said in the timeout message: what the ranks were doing

    def _wait(self, request, what: str) -> None:
        """Poll `request`: spin for 5 ms, then sleep in growing slices up to a millisecond.
        MPI progresses a non-blocking collective only inside Test, and a large allreduce
        takes several rounds, so napping from the start more than doubled its time (the
        measurement: docs/distributed.md, bench/mpi_scaling.py); a rank that waits longer
        (rank 0 evaluating) sleeps instead of taking a core from the others."""
        start = time.perf_counter()
        nap = 0.0
        while not request.Test():
            waited = time.perf_counter() - start
            if waited > self.timeout:
                sys.stderr.write(
                    f"rnnlab: error: rank {self.rank} of {self.size} waited {waited:.0f} s for "
                    f"the other ranks in {what}{self.where}; one of them died or hangs. "
                    f"Stopping every rank (the wait is set by {TIMEOUT_VARIABLE}).\n"
                )
                _abort(self.comm, 3)
            if waited > 5e-3:
                nap = min(max(nap * 2, 2e-5), 1e-3)
                time.sleep(nap)

    def allreduce(self, buffer: np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce a contiguous array in place across the ranks ("sum", "max" or "min")."""
        _contiguous(buffer, "buffer")
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, ops[op])
        self._wait(request, "an allreduce")
        return buffer

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite a contiguous array with rank `root`'s, on every rank."""
        _contiguous(buffer, "buffer")
        self._wait(self.comm.Ibcast(buffer, root=root), "a broadcast")
        return buffer

    def gather(self, array: np.ndarray, root: int = 0) -> np.ndarray | None:
        """Rank `root` gets every rank's array (of one shape) stacked on a new first axis."""
        array = np.ascontiguousarray(array)
        out = np.empty((self.size, *array.shape), array.dtype) if self.rank == root else None
        self._wait(self.comm.Igather(array, out, root=root), "a gather")
        return out

    def node_ranks(self) -> int:
        """How many ranks run on this rank's machine (a collective: every rank calls it)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank."""
        return bool(self.allreduce(np.array([int(bool(flag))], np.int32), "max")[0])

    def lead_says(self, flag: bool) -> bool:
        """Rank 0's flag, on every rank."""
        return bool(self.broadcast(np.array([int(bool(flag))], np.int32))[0])

    def broadcast_text(self, text: str, root: int = 0) -> str:
        """Rank `root`'s string, on every rank (its length, then its UTF-8 bytes)."""
        data = np.frombuffer(text.encode("utf-8"), np.uint8) if self.rank == root else None
        n = self.broadcast(np.array([0 if data is None else data.size], np.int64), root)[0]
        buf = data.copy() if data is not None else np.empty(int(n), np.uint8)
        return bytes(self.broadcast(buf, root)).decode("utf-8")

    def broadcast_params(self, params: dict[str, np.ndarray]) -> None:
        """Make every rank's arrays rank 0's (in place), in one broadcast of one buffer."""
        keys = list(params)
        if not keys:
            return
        flat = _flatten([params[k] for k in keys], np.result_type(*params.values()))
        self.broadcast(flat)
        _unflatten(flat, [params[k] for k in keys])

    def check_same(self, params: dict[str, np.ndarray], when: str) -> None:
        """Raise on every rank unless all ranks hold bit-identical arrays: a CRC-32 of each
        rank's bytes, compared through one allreduce (max and min of the same number)."""
        crc = 0
        for k in params:
            crc = zlib.crc32(np.ascontiguousarray(params[k]).data, crc)  # (.data: its bytes)
        both = np.array([crc, -crc], np.int64)
        self.allreduce(both, "max")
        if both[0] != -both[1]:
            raise RuntimeError(
                f"the ranks' weights differ {when}: data-parallel training needs every rank "
                "to apply the same update; the MPI library's allreduce may not hand every "
                "rank the same sum (report it with the MPI library's name and version)"
            )


class StartInterrupted(KeyboardInterrupt):
    """Every rank stops before training because one was interrupted at the start: a
    KeyboardInterrupt (the rnnlab command says it in one line, exit status 130, as a Ctrl-C
    during training ends) that names the rank."""


class StartTerminated(StartInterrupted):
    """StartInterrupted where a rank's signal was SIGTERM: `rnnlab train` says it as
    "rnnlab: terminated: ...", exit status 143 (128 + 15), as training ends on SIGTERM."""


# The stop signals as the ranks' agreements carry them: one number per rank, these bits.
_SIGNAL_BITS = {signal.SIGINT: 1, signal.SIGTERM: 2}


def signal_code(signums: Collection[int]) -> int:
    """The bits of `signums` (_SIGNAL_BITS), one rank's word on its stop signals."""
    return sum(bit for signum, bit in _SIGNAL_BITS.items() if signum in signums)


class StartInterrupts:
    """The stop signals (rnnlab.train.STOP_SIGNALS: SIGINT, Ctrl-C or `kill -INT` of one
    rank, and SIGTERM, which Slurm sends every rank before it kills a job) on a rank of
    `mpiexec ... rnnlab train` from before it starts MPI to its first step, where
    Trainer.run's own handler takes over; `restore` puts the handlers before it back. While
    MPI itself starts (MPI_Init, where no handler of Python's runs) the two keep their
    default action instead (`_mpi`): they end the rank, and mpiexec the others.

    Python's own handler raises KeyboardInterrupt wherever the rank is (SIGTERM's default
    kills it). Inside one of the start's collectives the rank left it unfinished and
    stopped, and the others waited for it: in that collective until RNNLAB_MPI_TIMEOUT (600
    s), or, past the check of the settings, for ever in MPI_Comm_split_type (share_cores),
    which has no timeout. Here the signal is noted (`noted`) as training notes it, and the
    next agreement of the start (`agree_to_start`, DistributedTrainer.check_same_run) stops
    every rank before anything is written; one noted after the last of them stops training
    after its first step, which is saved (DistributedTrainer._signals_before), as during
    training. While `local` is set (the rank's own work: reading its options and data,
    building its model) it raises KeyboardInterrupt at once instead, so that a large corpus
    is not read to the end: the caller then says it in the start agreement, where every
    rank waits for its word."""

    def __init__(self) -> None:
        self.noted: set[int] = set()
        self.local = False
        self._before = take_signals(self._on_signal)  # ({} off the main thread: Python's own)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.noted.add(signum)
        if self.local:
            self.local = False  # a second signal while the others are told is only noted
            raise KeyboardInterrupt

    @property
    def code(self) -> int:
        """The signals noted, as the start's agreements carry them (signal_code)."""
        return signal_code(self.noted)

    def restore(self) -> None:
        give_back_signals(self._before)
        self._before = {}


def agree_to_start(comm: Communicator, failed: bool, interrupted: int) -> bool:
    """The start agreement of `rnnlab train` on K ranks, after each rank's own work and
    before any other collective (a rank that failed there would leave the others waiting in
    it), and again as the last collective before DistributedTrainer.run (after the run
    directory is made, before share_cores's MPI_Comm_split_type, which has no timeout):
    every rank says whether its start failed or was interrupted (the signal_code of its
    stop signals; 0: none). A rank that failed returns, to raise its own error: True where
    some rank did not fail (its error is then this rank's own: `on_rank` says it so); the
    others raise "another rank could not start the run" if one failed, else
    StartInterrupted (or StartTerminated) if one was interrupted."""
    said = np.zeros((2, comm.size), np.int32)
    said[:, comm.rank] = (failed, interrupted)
    comm.allreduce(said)
    if failed:
        return not said[0].all()
    if said[0].any():
        raise RuntimeError("another rank could not start the run (its error is above)")
    stop_if_interrupted(said[1])
    return False


# The kinds of error the command line tells apart by its exit status (rnnlab.cli._guarded)
_SAID_KINDS = (ValueError, OSError, ImportError, RuntimeError)


def on_rank(error: BaseException, comm: Communicator) -> BaseException:
    """A start error that one rank alone raised, as it says it: "rank 1 of 4 could not start
    the run: ...". The others say "another rank could not start the run (its error is
    above)", and mpiexec prints the ranks' lines as they come, naming none: the failing
    rank's own line said nothing of which rank it was. An error of the kinds the command
    line tells apart stays of its kind (the exit status is the same); any other, and one
    raised on every rank (each says the same), is returned as it is."""
    kind = next((k for k in _SAID_KINDS if isinstance(error, k)), None)
    if kind is None:
        return error
    text = " ".join((str(error) or type(error).__name__).split())
    return kind(f"rank {comm.rank} of {comm.size} could not start the run: {text}")


def stop_if_interrupted(codes: np.ndarray) -> None:
    """Raise StartInterrupted naming the ranks and their signals, where any rank's code (one
    per rank, as an agreement of the start reduced them: signal_code) is set; StartTerminated
    where one of them is SIGTERM's."""
    if codes.any():
        stop = StartTerminated if _any_sigterm(codes) else StartInterrupted
        raise stop(
            f"{_signals_on(codes, 'SIGINT (Ctrl-C)')} while the ranks started: every rank "
            "stopped before training; nothing was trained or saved"
        )


def _any_sigterm(codes: np.ndarray) -> bool:
    return bool((codes.astype(np.int64) & _SIGNAL_BITS[signal.SIGTERM]).any())


def _signals_on(codes: np.ndarray, sigint: str = "SIGINT") -> str:
    """Which stop signal came on which ranks (one code per rank, signal_code), SIGTERM first:
    "SIGINT on all 2 ranks", "SIGTERM on rank 1 of 4, SIGINT on ranks 0, 2 of 4"."""
    codes = codes.astype(np.int64)
    said = [f"{name} on {_ranks(codes & _SIGNAL_BITS[signum])}"
            for signum, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, sigint))
            if (codes & _SIGNAL_BITS[signum]).any()]  # fmt: skip
    return ", ".join(said)


def _ranks(flags: np.ndarray) -> str:
    """The ranks whose flag is set (one flag per rank), said: "rank 1 of 4", "ranks 1, 3 of
    4", "all 4 ranks" (a Ctrl-C at the terminal: mpiexec forwards it to each)."""
    which = [str(i) for i in np.flatnonzero(flags)]
    K = len(flags)
    if len(which) == K > 1:
        return f"all {K} ranks"
    return f"rank{'s' if len(which) > 1 else ''} {', '.join(which)} of {K}"


def join_failed_start() -> None:
    """For a rank of `mpiexec ... rnnlab train` that failed before it started MPI (a bad
    option, which argparse reports before cmd_train runs): start MPI and answer the startup
    agreement as failed, so the other ranks, waiting for it there (or in MPI's own start,
    which needs every rank), stop with "another rank could not start the run" instead of
    spinning until killed. Nothing when no MPI launcher started this process, nor without
    mpi4py: then no rank can start MPI (each says so), and the option's error stays the one
    line said (it was followed by a traceback of the missing import)."""
    if not launched():
        return
    try:
        comm = Communicator()
    except ImportError:
        return
    agree_to_start(comm, failed=True, interrupted=0)


def _abort(comm, code: int) -> None:
    """MPI_Abort after a pause: the launcher tears down the ranks' output pipes at once; the
    line just written was lost in one of three runs of tests/test_distributed.py's hung rank
    without the pause."""
    sys.stderr.flush()
    time.sleep(0.5)
    comm.Abort(code)
    os._exit(code)  # Abort ends every rank; should it return, this one still ends


def _contiguous(a, name: str) -> None:
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        raise TypeError(f"`{name}` must be a C-contiguous NumPy array; got {type(a).__name__}")


def _flatten(arrays, dtype, extra: int = 0) -> np.ndarray:
    flat = np.empty(sum(a.size for a in arrays) + extra, dtype)
    at = 0
    for a in arrays:
        flat[at : at + a.size] = a.ravel()
        at += a.size
    return flat


def _unflatten(flat: np.ndarray, arrays) -> None:
    at = 0
    for a in arrays:
        a[...] = flat[at : at + a.size].reshape(a.shape)
        at += a.size


def reduce_gradients(
    grads: dict[str, np.ndarray],
    comm: Communicator,
    weight: float,
    extra: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Σ over ranks of weight · grads, and of `extra` (a few numbers riding along: a loss,
    flags), with one allreduce over one flat buffer in the gradients' dtype. Returns new
    arrays (views into that buffer) and the reduced extra."""
    if not isinstance(grads, dict) or not grads:
        raise TypeError("`grads` must be a non-empty dict of NumPy arrays (name → gradient)")
    keys = list(grads)
    arrays = [np.asarray(grads[k]) for k in keys]
    dtype = np.result_type(*arrays)
    extra = np.zeros(0, dtype) if extra is None else np.asarray(extra, dtype)
    flat = _flatten(arrays, dtype, extra.size)
    n = flat.size - extra.size
    if weight != 1:
        flat[:n] *= dtype.type(weight)
    flat[n:] = extra
    comm.allreduce(flat)
    out, at = {}, 0
    for k, a in zip(keys, arrays, strict=True):
        out[k] = flat[at : at + a.size].reshape(a.shape)
        at += a.size
    return out, flat[n:]


def average_gradients(
    grads: dict[str, np.ndarray], comm: Communicator | None = None, weight: float | None = None
) -> dict[str, np.ndarray]:
    """The gradient dict summed across ranks, each rank's scaled by `weight` (default 1/K:
    the mean, right when every rank's loss is a mean over as many items). For shards of
    unequal size, pass weight = this rank's items / all ranks' items; for a loss that is a
    sum over items (reduction "sum"), weight = 1: the global loss is the ranks' sum. One
    allreduce."""
    comm = comm or Communicator()
    w = 1.0 / comm.size if weight is None else float(weight)
    return reduce_gradients(grads, comm, w)[0]


def share_cores(comm: Communicator) -> int:
    """Give each rank its share of the machine's cores for rnnlab's threads
    (RNNLAB_NUM_THREADS, unless set): K ranks on one machine each splitting their batch over
    every core would run K times too many threads, and a thread that waits for its core
    stalls the whole step (on this 2-core host, 2 ranks of an adding LSTM ran 20 times slower
    per step so). A rank the launcher bound to some cores keeps those. Returns the count."""
    n = comm.node_ranks()
    asked = settings.current().num_threads
    if asked is not None:
        return asked
    cores = settings.cores()
    threads = max(1, cores // n) if cores >= (os.cpu_count() or 1) else cores
    os.environ["RNNLAB_NUM_THREADS"] = str(threads)  # for this process and its children
    settings.reload()
    return threads


def _row_counts(task, batch: Batch) -> np.ndarray:
    """How much each row of `batch` weighs in the task's mean loss: 1 for a task with one
    target per sequence, its valid steps for one with a target per step and sequences of
    different lengths; 0 for a row whose sequence ended before this window. A task whose
    loss averages over something else (a decoder's target tokens) says it with a method
    `row_weights(batch)` -> one number per row."""
    if hasattr(task, "row_weights"):
        return np.asarray(task.row_weights(batch), float)
    B = len(batch.x)
    per_step = getattr(task, "per_step", False) or getattr(task, "readout", "") == "steps"
    counts = np.ones(B)
    if per_step and batch.lengths is not None:
        counts = np.asarray(batch.lengths, float).copy()
    if batch.active is not None:
        counts = counts * batch.active
    return counts


def _checkpoint_crc(ckpt) -> int:
    """A CRC-32 of what a checkpoint gives a resumed run: its state.json, weights, optimizer
    state and carried states, as `restore` read them."""
    crc = zlib.crc32(json.dumps(ckpt.state, sort_keys=True, default=str).encode())
    for tensors in (ckpt.model, ckpt.optimizer):
        for k in sorted(tensors):
            crc = zlib.crc32(k.encode(), crc)
            crc = zlib.crc32(np.ascontiguousarray(tensors[k]).data, crc)
    return crc


class _Null:
    """Where the other ranks' progress bar goes."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


class DistributedTrainer(Trainer):
    """The Trainer on K ranks: K·b rows per step, b per rank, one update for all.

    The task is built with the global batch (cfg.batch_size = K·b); every rank draws the same
    global batch from (seed, step) and keeps its rows [rank·b, (rank+1)·b), so a run on K
    ranks sees exactly the batches one process with batch K·b sees. Each rank's mean loss is
    weighted by its share of the items the global mean averages over, so the summed gradient
    is the global batch's. The checkpoint holds the global carried state (gathered), hence a
    run can be resumed on any number of ranks that divides the batch, or in one process.

    Stop decisions are collective: a local NaN, a Ctrl-C or the time limit ride in the
    gradient buffer's last slots; early stopping is rank 0's decision, broadcast; so every
    rank stops at the same step and rank 0 writes one checkpoint.

    Dropout draws its masks from (seed, step, rank): the run is then as good as one
    process's but not equal to it (a single process draws one mask for all K·b rows).
    """

    def __init__(self, model, task, cfg, run_dir, *, comm: Communicator, **kw):
        super().__init__(model, task, cfg, run_dir, **kw)
        self.comm = comm
        K = comm.size
        if cfg.batch_size % K:
            # (a new run's batch is K times --batch-size: this is a --resume of a run begun
            # on another number of ranks, where the message named no number that works)
            B = cfg.batch_size
            fit = [str(k) for k in range(1, B + 1) if B % k == 0]
            raise ValueError(
                f"`batch_size` {B} (the global batch) must split evenly over the {K} ranks; "
                f"it splits over {', '.join(fit[:-1])} or {fit[-1]} ranks" if len(fit) > 1
                else f"`batch_size` {B} (the global batch) must split evenly over the {K} "
                "ranks; it splits over 1 rank alone (one process)"
            )
        self.shard = cfg.batch_size // K
        first = task.batch(0, np.random.default_rng([cfg.seed, 0]))
        self._check_rows(len(first.x), cfg, K)
        # what check_same_run compares: the settings (not --data's path, which may differ
        # between machines) and the first batch's bytes (the data as this rank reads it)...
        settings_text = json.dumps({"train": {k: v for k, v in cfg.to_dict().items()
                                              if k != "data"}, "model": self.spec},
                                   sort_keys=True, default=str)  # fmt: skip
        data_crc = zlib.crc32(np.ascontiguousarray(first.x).data)
        # and what the run records of its data (a corpus's SHA-256, its vocabulary; not the
        # path): a first batch reads a few windows, and a corpus that differs elsewhere (one
        # character in its middle) trained on silently, recorded as rank 0's
        record = getattr(task, "data_record", None)
        if callable(record):
            kept = {k: v for k, v in record().items() if k != "path"}
            data_crc = zlib.crc32(json.dumps(kept, sort_keys=True, default=str).encode(),
                                  data_crc)  # fmt: skip
        self._settings_text = settings_text
        self._fingerprint = (zlib.crc32(settings_text.encode()),
                             zlib.crc32(np.ascontiguousarray(first.y).data, data_crc))
        self.lead = comm.rank == 0
        if not self.lead:
            self.stream, self.quiet = _Null(), True
        self._agreed = {"interrupt": False, "time": False}
        # which ranks' stop signals the stop follows (their signal_code, one per rank)
        self._interrupted_on = np.zeros(comm.size)
        self._global_batch: Batch | None = None
        self._reduced = False
        self._at = "at the start"  # (run and the hooks say where: the line of a failure)
        self._t_start = time.perf_counter()
        # what `restore` took up (a CRC of the checkpoint; 0: a new run), which
        # check_same_run compares: each rank reads the checkpoint, and one that read another
        # (a stale copy on its node) trained from its own step, on other batches than rank
        # 0's, summed into the same update, until the ranks met in different collectives
        self._resumed = 0
        # the stop signals of the start, noted until the first step (`rnnlab train` sets it)
        self.interrupts: StartInterrupts | None = None

    @staticmethod
    def _check_rows(n: int, cfg, K: int) -> None:
        """A training set smaller than the global batch makes every batch all of it, fewer
        rows than the ranks share (one process trains on them as a smaller batch): said here,
        where every rank sees it before the run directory is made, not by `_draw` at step 1,
        which stopped every rank with MPI_Abort and left a run with no checkpoint."""
        B = cfg.batch_size
        if n >= B:
            return
        fit = (f"--batch-size at most {n // K} on each of the {K} ranks" if n >= K else
               f"at most {n} ranks")  # fmt: skip
        raise ValueError(
            f"`batch_size` {B} (the global batch: {K} ranks x {B // K}) is larger than the "
            f"{cfg.task} task's training set, whose batches then hold all of it, {n} rows; a "
            f"run on {K} ranks needs {fit} (a run started with a larger batch trains in one "
            "process)"
        )

    def check_same_run(self) -> None:
        """Collective: raise on every rank unless every rank has rank 0's settings, draws
        rank 0's first batch and records rank 0's data (the task's data_record). Each rank
        reads its own options and --data (a new run needs no shared filesystem), and one
        given another text of the same alphabet, or another
        --lr in an MPMD launch, trained on without a word: the weights stay equal (the
        gradients are summed), the run is not the one its config.json describes. Also an
        agreement on the stop signals (Ctrl-C, SIGTERM) noted since the start agreement
        (`interrupts`): the last before the run directory is made, which a rank interrupted
        while it waited there for a slower one's start reaches first."""
        K, r = self.comm.size, self.comm.rank
        crcs = np.zeros((5, K), np.int64)
        noted = 0 if self.interrupts is None else self.interrupts.code
        crcs[:, r] = (*self._fingerprint, self._resumed, self.step, noted)
        self.comm.where = " at the start"
        self.comm.allreduce(crcs)
        other = [i for i in range(1, K) if crcs[0, i] != crcs[0, 0]]
        # (every rank sees the same sums: all take part in the broadcasts of the two texts)
        which = self._setting_differs(other[0]) if other else ""
        for row, what, detail in (
            (crcs[0], "has other settings (its options or --config)", which),
            (crcs[1], "reads other data (its --data or data files: their first batch or "
             "the record of them config.json keeps, a corpus's SHA-256)", ""),
        ):
            other = [i for i in range(1, K) if row[i] != row[0]]
            if other:
                raise ValueError(
                    f"rank {other[0]} of {K} {what} than rank 0{detail}: data-parallel "
                    "training needs every rank to be given the same options and the same "
                    "data (on a machine of its own, a copy with the same bytes)"
                )
        other = [i for i in range(1, K) if crcs[2, i] != crcs[2, 0]]
        if other:
            i = other[0]
            raise ValueError(
                f"rank {i} of {K} resumed another checkpoint (of step {crcs[3, i]}) than rank 0 "
                f"(of step {crcs[3, 0]}): `--resume` needs every rank to read the same run "
                "directory (a shared filesystem, or on a machine of its own a copy with the "
                "same bytes)"
            )
        stop_if_interrupted(crcs[4])

    def _setting_differs(self, rank: int) -> str:
        """Collective: the first setting in which rank `rank` differs from rank 0, as
        " (--lr 0.5 where rank 0 has 0.002)": a CRC alone named none, and the user was left to
        compare the ranks' command lines and --config files. Each rank gets both texts."""
        ours = json.loads(self.comm.broadcast_text(self._settings_text, 0))
        theirs = json.loads(self.comm.broadcast_text(self._settings_text, rank))
        said = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
        for part, name in (("train", "--{}"), ("model", "the model's `{}`")):
            a, b = ours.get(part, {}), theirs.get(part, {})
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    option = name.format(key.replace("_", "-") if part == "train" else key)
                    return f" ({option} {said(b.get(key))} where rank 0 has {said(a.get(key))})"
        return ""

    def _rows(self) -> slice:
        return slice(self.comm.rank * self.shard, (self.comm.rank + 1) * self.shard)

    # ------------------------------------------------------------------ the hooks
    def _draw(self, step, rng):
        batch = self.task.batch(step, rng)  # the global batch, the same on every rank
        B = self.cfg.batch_size
        if len(batch.x) != B:
            raise ValueError(
                f"the {self.task.name} task drew a batch of {len(batch.x)} rows at step "
                f"{step + 1}; sharding over {self.comm.size} ranks needs batch_size = {B}"
            )
        rows = self._rows()
        # rank 0 logs the gradient record of the global batch's first rows, as one process
        # with the global batch does (its own shard holds only B/K of them)
        self._global_batch = batch if self.lead else None
        counts = _row_counts(self.task, batch)
        total = counts.sum()
        self._weight = float(counts[rows].sum() / total) if total > 0 else 0.0
        active = None if batch.active is None else batch.active[rows].copy()
        if active is not None and not active.any() and (
            batch.active is not None and batch.active.any()
        ):
            # the other ranks learn from this window and wait for this rank's gradient: give
            # them one of its rows, weighted 0 (self._weight is 0)
            active[0] = True
        shard = Batch(
            batch.x[rows],
            batch.y[rows],
            None if batch.lengths is None else batch.lengths[rows],
            carry=batch.carry,
            items=batch.items,
            active=active,
        )
        return shard, np.random.default_rng([self.cfg.seed, step, 1 + self.comm.rank])

    def _reduce(self, grads, loss, step):
        K, r = self.comm.size, self.comm.rank
        # extra slots, in the gradients' dtype: time limit, then per rank its stop signals
        # (signal_code: which rank, which signal, said at the stop), "diverged" and its
        # weighted loss as two numbers, the loss rounded to that dtype and what the rounding
        # left (the others' slots are 0, and x + 0 is x): the loss summed in float32 kept 7
        # of the 16 digits one process logs (its mean is summed in float64),
        # 1.4670792818069458 for 1.467079296708107 at step 1 of adding
        extra = np.zeros(1 + 4 * K)
        limit = self.cfg.time_limit
        extra[0] = bool(limit and time.perf_counter() - self._t_start > limit)
        extra[1 + r] = signal_code(self._signals)
        diverged = grads is None
        if diverged:
            grads = self._zero_grads()
            extra[1 + K + r] = 1
        else:
            dtype = np.result_type(*grads.values())
            mine = loss * self._weight
            high = float(dtype.type(mine)) if dtype.itemsize < 8 else mine
            extra[1 + 2 * K + r], extra[1 + 3 * K + r] = high, mine - high
        self.comm.where = f" at step {step + 1}"
        out, extra = reduce_gradients(grads, self.comm, self._weight, extra)
        self._reduced = True
        self._agreed["time"] = bool(extra[0])
        self._agreed["interrupt"] = bool(extra[1 : 1 + K].any())
        self._interrupted_on = extra[1 : 1 + K].copy()
        others = [i for i in range(K) if extra[1 + K + i] and i != r]
        if others and not diverged:
            raise NonFiniteError(
                f"rank {others[0]} of {K} found NaN or inf at step {step + 1} (its message "
                f"says where); the weights were not updated. {self._remedy()}",
                step=step + 1,
            )
        parts = extra[1 + 2 * K :].astype(np.float64)
        return out, sum(float(parts[i]) + float(parts[K + i]) for i in range(K))

    def _signals_before(self):
        return set() if self.interrupts is None else set(self.interrupts.noted)

    def _stop_signal(self):
        return signal.SIGTERM if _any_sigterm(self._interrupted_on) else signal.SIGINT

    def _interrupted_where(self):
        return f" ({_signals_on(self._interrupted_on)})"

    def _zero_grads(self) -> dict:
        return {k: np.zeros_like(v) for k, v in self.model.params.items()}

    def _train_step(self, step):
        self._reduced = False
        self._at = f"at step {step + 1}"
        try:
            return super()._train_step(step)
        except NonFiniteError as e:
            if self._reduced:  # after the reduce every rank sees the same numbers
                raise
            # This rank diverged before the reduce, where the others wait: tell them.
            self._reduce(None, 0.0, step)
            raise e.said(f"rank {self.comm.rank} of {self.comm.size}: {e}") from None

    def _agree(self, local, kind):
        return self._agreed[kind]

    def _lead_says(self, value):
        return self.comm.lead_says(value if self.lead else False)

    def _saved_any(self):
        return self.comm.lead_says(super()._saved_any() if self.lead else False)

    def _gradient_record(self, batch, *args):
        """Rank 0's record, of the global batch (the lag profile reads its first sequences)."""
        if not self.lead:
            return None
        whole = batch if self._global_batch is None else self._global_batch
        return super()._gradient_record(whole, *args)

    def _validate(self, metrics_path, progress, counted=True):
        """Rank 0 evaluates and decides early stopping; the others wait for its word. An
        evaluation that is not finite stops every rank (each then saves, collectively, as
        after a diverged step), not rank 0 alone in another collective than theirs."""
        self.comm.where = f" at the evaluation of step {self.step}"
        self._at = self.comm.where[1:]
        stop, diverged = False, None
        if self.lead:
            try:
                stop = super()._validate(metrics_path, progress, counted)
            except NonFiniteError as e:
                diverged = e
        if self.comm.lead_says(diverged is not None):
            raise diverged or NonFiniteError(
                f"rank {self.comm.rank} of {self.comm.size}: rank 0's validation at step "
                f"{self.step} was not finite (its error is above)", step=self.step)
        return self.comm.lead_says(stop)

    # ------------------------------------------------------------------ state
    def _carry_arrays(self):
        if self.carry is None:
            return []
        return [a for s in self.carry if s is not None for a in (s if isinstance(s, tuple)
                                                                  else (s,))]  # fmt: skip

    def _map_carry(self, fn) -> list:
        assert self.carry is not None  # (the callers check)
        out: list = []
        for s in self.carry:
            if s is None:
                out.append(None)
            elif isinstance(s, tuple):
                out.append(tuple(fn(a) for a in s))
            else:
                out.append(fn(s))
        return out

    def save(self):
        """Collective: the weights are checked to agree, the carried state of every rank's
        rows is gathered, and rank 0 writes the checkpoint of the global batch."""
        self.comm.where = f" at the checkpoint of step {self.step}"
        self._at = self.comm.where[1:]
        self.comm.check_same(self.model.params, f"at step {self.step}")
        if self.carry is None:
            return super().save() if self.lead else self.run_dir

        def gather(a):  # the batch is the second-last axis of a carried state (…, B, H)
            g = self.comm.gather(np.moveaxis(a, -2, 0))
            return None if g is None else np.moveaxis(g.reshape(-1, *g.shape[2:]), 0, -2)

        full = self._map_carry(gather)
        if not self.lead:
            return self.run_dir
        local, self.carry = self.carry, full
        try:
            return super().save()
        finally:
            self.carry = local

    def restore(self, ckpt):
        """The checkpoint's carried state is the global batch's; keep this rank's rows."""
        super().restore(ckpt)
        self._resumed = _checkpoint_crc(ckpt)
        if self.carry is not None:
            B, rows = self.cfg.batch_size, self._rows()
            for a in self._carry_arrays():
                if a.ndim < 2 or a.shape[-2] != B:
                    raise ValueError(
                        f"the checkpoint's carried state has shape {a.shape}; a run on "
                        f"{self.comm.size} ranks needs its batch axis (second last) of size {B}"
                    )
            self.carry = self._map_carry(lambda a: np.ascontiguousarray(a[..., rows, :]))

    def run(self):
        """Rank 0's weights and optimizer state everywhere first (a resumed run's too: each
        rank read the checkpoint, but only agreement is what makes the updates agree)."""
        self.comm.where = " at the start"
        # what the line of a failure on one rank names (`self.step + 1` alone said "stopped at
        # step 21" of a checkpoint of step 20 that rank 0 could not write)
        self._at = f"at step {self.step + 1}"
        try:
            # here, after every rank has started (`rnnlab train`'s last agreement comes just
            # before): share_cores is a collective without a timeout (MPI_Comm_split_type),
            # and whatever raises from here on one rank ends every rank below
            share_cores(self.comm)
            self.comm.broadcast_params(self.model.params)
            state = {k: v for k, v in self.opt_state.items() if v.dtype.kind == "f"}
            self.comm.broadcast_params(state)
            return super().run()
        except NonFiniteError as e:
            # every rank raises it at the same step (the decision was collective); rank 0
            # alone wrote the checkpoint its message names
            said = f" saved in {self.run_dir}."
            if self.lead or not str(e).endswith(said):
                raise
            text = str(e)[: -len(said)] + f" saved by rank 0 in {self.run_dir}."
            raise e.said(text) from None
        except BaseException as e:
            # Anything else happened on this rank alone (a full disk on rank 0, a bug): the
            # others would wait for it in the next collective until the timeout. End them now.
            text = " ".join((str(e) or type(e).__name__).split()).rstrip(".")
            sys.stderr.write(
                f"rnnlab: error: rank {self.comm.rank} of {self.comm.size} stopped {self._at}: "
                f"{text}; stopping every rank.\n"
            )
            _abort(self.comm.comm, 1)
