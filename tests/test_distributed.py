"""Data-parallel training over MPI: `mpiexec -n 2` on this machine (loopback), as subprocesses.

mpi4py and mpich are in the test extra; locally the module is skipped without mpi4py, under CI
(CI set in the environment) a missing mpi4py is an error, so these tests always run there.

What is compared, and how closely:
* 2 ranks with batch b against 1 process with batch 2b, after 20 steps: not bit-identical
  (each rank sums its rows' gradients, then the allreduce adds the two partial sums; one
  process sums all rows in one product), within float32 summation-order noise: 1e-6 of the
  largest weight of each tensor (measured 2026-12-06 on an AMD EPYC Zen 4: 1.1e-7 adding
  LSTM, 1.0e-7 GRU, 1.1e-7 charlm, 0.8e-7 pytokens with --bptt; the encoder-decoder of
  numbers 1.9e-6, under its own 1e-5).
* a 2-rank run resumed from its checkpoint after a rank was killed, against the same 2-rank
  run uninterrupted: bit-identical (the same shards, the same reduction order).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import oracle

from rnnlab import io

oracle("mpi4py")

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
    "mpiexec"
)
MAIN = "import sys; from rnnlab.cli import main; sys.exit(main(sys.argv[1:]))"
ADDING = ["train", "adding", "--hidden", "16", "--T", "20", "--eval-every", "10", "--quiet"]

# Rank 1 (rank 0 too where asked) of a test's job runs this instead of the plain command: at
# step AT (counted from 1) it kills itself, stops itself, interrupts itself (Ctrl-C),
# terminates itself (SIGTERM) or feeds the model NaN.
SABOTEUR = """
import os, signal, sys
import numpy as np
from rnnlab import distributed
from rnnlab.cli import main

action, at = sys.argv[1], int(sys.argv[2])
draw = distributed.DistributedTrainer._draw

def sabotaged(self, step, rng):
    batch, rng = draw(self, step, rng)
    if step + 1 == at:
        if action == "nan":  # the loss of this step is NaN
            loss = type(self.task).loss
            self.task.loss = lambda out, b: (float("nan"), loss(self.task, out, b)[1])
        elif action == "raise":
            raise OSError("No space left on device (pretend)")
        else:
            sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "int": signal.SIGINT,
                   "term": signal.SIGTERM}
            os.kill(os.getpid(), sig[action])
    return batch, rng

distributed.DistributedTrainer._draw = sabotaged
sys.exit(main(sys.argv[3:]))
"""


def _env(**extra):
    env = dict(os.environ, RNNLAB_NUM_THREADS="1", **extra)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def launch(tail, cwd=None, timeout=240, during=None, **env):
    """`mpiexec -launcher fork TAIL`, each rank's stdout and stderr in files of its own (MPI
    forwards the ranks' output in pieces that can interleave mid-line), joined in rank order
    after mpiexec's own: the CompletedProcess's stdout and stderr. `during(job)`, if given, is
    called with the job (its Popen) once it has started (to signal one of its ranks)."""
    assert MPIEXEC, "mpiexec (the mpich wheel, in the test extra) is not on the PATH"
    with tempfile.TemporaryDirectory() as logs:
        cmd = [MPIEXEC, "-launcher", "fork", "-outfile-pattern", f"{logs}/out.%r",
               "-errfile-pattern", f"{logs}/err.%r", *map(str, tail)]  # fmt: skip
        with subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as job:  # fmt: skip
            try:
                if during is not None:
                    during(job)
                out, err = job.communicate(timeout=timeout)
            except BaseException:  # (as subprocess.run: no job left running)
                job.kill()
                raise
        done = subprocess.CompletedProcess(cmd, job.returncode, out, err)
        for kind in ("out", "err"):
            files = sorted(Path(logs).glob(f"{kind}.*"), key=lambda f: int(f.suffix[1:]))
            text = "".join(f.read_text() for f in files)
            setattr(done, f"std{kind}", getattr(done, f"std{kind}") + text)
    return done


def mpiexec(args, cwd, *, rank1=None, rank0=None, timeout=240, **env):
    """`mpiexec -n 2 rnnlab ARGS` with rank 0 in `cwd` and rank 1 in cwd/rank1, an empty
    directory: a relative --run-dir of rank 1 is there, so whatever rank 1 writes shows up
    there (and the run needs no shared filesystem). rank1=(action, step): rank 1 runs the
    saboteur; rank0 likewise."""
    args = [str(a) for a in args]
    (Path(cwd) / "rank1").mkdir(exist_ok=True)
    saboteur = Path(cwd) / "saboteur.py"
    saboteur.write_text(SABOTEUR)

    def command(sabotage):
        if sabotage is None:
            return [sys.executable, "-c", MAIN, *args]
        return [sys.executable, str(saboteur), *map(str, sabotage), *args]

    tail = ["-n", "1", *command(rank0), ":",
            "-n", "1", "-wdir", str(Path(cwd) / "rank1"), *command(rank1)]  # fmt: skip
    done = launch(tail, cwd, timeout, **env)
    assert list((Path(cwd) / "rank1").iterdir()) == [], "rank 1 wrote files"
    return done


def single(args):
    """One process, in this one (its compiled loops are warm)."""
    from rnnlab.cli import main

    assert main([str(a) for a in args]) == 0


def weights(run):
    return io.load_checkpoint(run).model


def ok(done):
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def relative_gap(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()) for k in a)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A small corpus for charlm: 8 streams of 2·16-character windows need little text."""
    rng = np.random.default_rng(3)
    words = ["state", "carry", "rank", "batch", "gradient", "window", "the", "of", "a"]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(" ".join(rng.choice(words, 6000)) + "\n")
    return path


@pytest.mark.parametrize(
    "task,extra",
    [
        ("lstm", []),
        ("gru", []),
        # charlm carries its state across windows (its checkpoint gathers every rank's rows)
        ("charlm", ["--seq-len", "16", "--embed", "8", "--dropout", "0"]),
        # pytokens: a target per step, windows of 10 with carried state
        ("pytokens", ["--seq-len", "20", "--train-size", "4000", "--bptt", "10", "--embed", "4"]),
        # an encoder-decoder: its loss is the mean over target tokens (Transduction.row_weights)
        ("numbers", ["--train-size", "500", "--embed", "4", "--attention-size", "4"]),
    ],
)
def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path, text, task, extra):
    if task == "charlm":
        args = ["train", "charlm", "--hidden", "16", "--data", text, "--eval-every", "10"]
        args.append("--quiet")
    elif task == "numbers":
        args = ["train", "numbers", "--hidden", "8", "--eval-every", "10", "--quiet", "--beam", "1"]
    elif task == "pytokens":
        args = ["train", "pytokens", "--hidden", "8", "--eval-every", "10", "--quiet"]
    else:
        args = [*ADDING, "--cell", task]
    args += [*extra, "--steps", "20", "--checkpoint-every", "10"]
    done = ok(mpiexec([*args, "--batch-size", "4", "--run-dir", "two"], tmp_path))
    single([*args, "--batch-size", "8", "--run-dir", tmp_path / "one"])
    two, one = weights(tmp_path / "two"), weights(tmp_path / "one")
    # float32 summation order; the encoder-decoder's attention and Adam carry it further
    # (1.4e-6 to 1.9e-6 at 20 steps; 2e-2 when the ranks' means are not weighted by target
    # tokens)
    assert relative_gap(two, one) < (1e-5 if task == "numbers" else 1e-6)
    # the run records the global batch, so one process can resume it (and the other way)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["train"]["batch_size"] == 8
    assert io.checkpoint_steps(tmp_path / "two") == [10, 20]
    logged = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().split("\n")
              if x]  # fmt: skip
    losses = [r["step"] for r in logged if "loss" in r and "split" not in r]
    assert losses == [10, 20]  # each step logged once: by rank 0 alone
    for name in ("config.json", "best.safetensors", "result.json", "model.safetensors"):
        assert (tmp_path / "two" / name).is_file(), name
    assert done.stdout.count("run directory:") == 1  # the report, by rank 0 alone
    assert done.stderr.count(f"training {args[1]}") == 1


@pytest.mark.parametrize("per_step", [True, False])
def test_shard_weights_make_the_global_mean(per_step):
    """The weights DistributedTrainer gives each rank's mean loss, for sequences of different
    lengths and rows that sit out a window (no built-in task has both yet): the weighted sum
    of the shards' mean-loss gradients is the global batch's, without MPI."""
    from rnnlab import distributed
    from rnnlab.losses import softmax_cross_entropy
    from rnnlab.train import Batch

    rng = np.random.default_rng(5)
    lengths = np.array([7, 2, 5, 1, 6, 3, 7, 4])
    active = np.array([1, 1, 0, 1, 1, 0, 0, 1], bool)  # 3 rows on rank 0, 2 on rank 1
    logits = rng.standard_normal((8, 7, 5))
    y = rng.integers(0, 5, (8, 7)) if per_step else rng.integers(0, 5, 8)
    out = logits if per_step else logits[:, -1]

    class Task:
        readout = "steps" if per_step else "last"

    batch = Batch(out, y, lengths, active=active)
    counts = distributed._row_counts(Task(), batch)
    keep = lambda a, rows: a[rows][active[rows]]  # noqa: E731
    kw = (lambda rows: {"lengths": keep(lengths, rows), "reduction": "mean"}) if per_step else (
        lambda rows: {"reduction": "mean"}
    )
    whole = slice(0, 8)
    _, want = softmax_cross_entropy(keep(out, whole), keep(y, whole), **kw(whole))
    got = []
    for rows in (slice(0, 4), slice(4, 8)):
        _, d = softmax_cross_entropy(keep(out, rows), keep(y, rows), **kw(rows))
        got.append(d * (counts[rows].sum() / counts.sum()))
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12, atol=1e-15)


def test_a_task_may_say_what_each_row_weighs():
    from rnnlab import distributed
    from rnnlab.train import Batch

    class Task:
        def row_weights(self, batch):  # e.g. a decoder's target tokens per row
            return np.array([3, 0, 2, 5])

    batch = Batch(np.zeros((4, 2)), np.zeros(4), np.array([1, 2, 2, 1]))
    assert distributed._row_counts(Task(), batch).tolist() == [3, 0, 2, 5]


# K ranks or one process (no launcher) train a float64 copy-task LSTM on sequences of
# different lengths, a target per step, in truncated-BPTT windows of 5: rows whose sequence
# ended sit a window out, and with 2 rows a rank, some ranks have no row to learn from in
# some windows (weighted 0, they still join the allreduce). Adam and clipping by global norm
# (at 0.5: it clips) act on the reduced gradient. Prints the weights' file and, per rank,
# how many windows it sat out.
RAGGED = """
import sys
from pathlib import Path
import numpy as np
from rnnlab import distributed, models, tasks
from rnnlab.tasks.synthetic import Copy
from rnnlab.train import TrainConfig, Trainer

class Ragged(Copy):
    def sample(self, n, rng):
        x, y, _ = super().sample(n, rng)
        lengths = rng.integers(2, x.shape[1] + 1, n)
        lengths[0] = x.shape[1]
        return x, y, lengths

out = Path(sys.argv[1])
cfg = TrainConfig(task="copy", T=10, bptt=5, embed=4, hidden=8, batch_size=8, optimizer="adam",
                  lr=1e-2, clip="global_norm", clip_at=0.5, steps=30)
task = Ragged(cfg)
model = models.build(tasks.model_spec(cfg, task), dtype=np.float64,
                     rng=np.random.default_rng(0))
comm = distributed.Communicator() if distributed.launched() else None
if comm is None:
    trainer = Trainer(model, task, cfg, out, quiet=True)
else:
    trainer = distributed.DistributedTrainer(model, task, cfg, out, comm=comm, quiet=True)
sat_out = 0
for step in range(cfg.steps):
    loss, norm, _ = trainer.train_step(step)
    sat_out += comm is not None and loss is not None and trainer._weight == 0
if comm is None or comm.rank == 0:
    np.savez(out, **model.params)
print("sat out", sat_out)
"""


def test_ranks_with_no_row_to_learn_from_keep_the_global_mean_exact_in_float64(tmp_path):
    """4 ranks x 2 rows against 1 process x 8 rows, in float64: equal to rounding (4e-16
    measured), so each rank's weight (its share of the valid steps) is right also where a
    rank's rows all sat a window out (a rank that skipped such a window left the others
    waiting in the allreduce; weighted by rows, not valid steps, the weights end 5e-2 apart)."""
    script = tmp_path / "ragged.py"
    script.write_text(RAGGED)
    done = ok(launch(["-n", "4", sys.executable, script, tmp_path / "four.npz"], timeout=120,
                     RNNLAB_MPI_TIMEOUT="30"))  # fmt: skip
    sat_out = [int(line.split()[-1]) for line in done.stdout.splitlines()]
    assert len(sat_out) == 4 and sum(sat_out) > 0  # the case under test happened
    ok(subprocess.run([sys.executable, script, tmp_path / "one.npz"], env=_env(),
                      capture_output=True, text=True, timeout=120))  # fmt: skip
    four, one = np.load(tmp_path / "four.npz"), np.load(tmp_path / "one.npz")
    assert four["0.weight"].dtype == np.float64
    assert relative_gap(dict(four), dict(one)) < 1e-12


def test_a_killed_rank_ends_the_job_and_the_run_resumes_exactly(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--checkpoint-every", "10"]
    start = time.perf_counter()
    done = mpiexec([*args, "--steps", "40", "--run-dir", "cut"], tmp_path, rank1=("kill", 25))
    took = time.perf_counter() - start
    assert done.returncode != 0
    assert "BAD TERMINATION" in done.stdout + done.stderr  # the launcher says which died
    assert took < 120  # ended, not hung (the launcher kills the others at once: ~0.2 s)
    assert io.checkpoint_steps(tmp_path / "cut") == [10, 20]
    # every rank reads the checkpoint (a path both see)
    ok(mpiexec(["train", "--resume", tmp_path / "cut", "--quiet"], tmp_path))
    ok(mpiexec([*args, "--steps", "40", "--run-dir", "whole"], tmp_path))
    cut, whole = weights(tmp_path / "cut"), weights(tmp_path / "whole")
    assert io.load_checkpoint(tmp_path / "cut").step == 40
    for k in whole:
        assert np.array_equal(cut[k], whole[k]), k


def test_a_two_rank_charlm_run_resumes_in_one_process_with_its_carried_state(tmp_path, text):
    """The checkpoint holds the global batch's carried state, gathered from both ranks' rows:
    a 2-rank run stopped at step 10 (Ctrl-C on rank 1) and resumed in one process ends where
    the 2-rank run that was not stopped ends, to float32 summation order (rows gathered in
    another order would carry each stream's state into another's next window)."""
    args = ["train", "charlm", "--hidden", "16", "--data", text, "--seq-len", "16", "--embed",
            "8", "--dropout", "0", "--eval-every", "5", "--quiet", "--steps", "20",
            "--batch-size", "3"]  # fmt: skip
    done = mpiexec([*args, "--run-dir", "cut"], tmp_path, rank1=("int", 10))
    assert done.returncode == 130, done.stderr
    assert io.checkpoint_steps(tmp_path / "cut") == [10]
    single(["train", "--resume", tmp_path / "cut", "--quiet"])
    ok(mpiexec([*args, "--run-dir", "whole"], tmp_path))
    assert io.load_checkpoint(tmp_path / "cut").step == 20
    assert relative_gap(weights(tmp_path / "cut"), weights(tmp_path / "whole")) < 1e-6


# Both ranks of a held start run this. Rank 0 waits for the test's file `go` before it takes
# part in its AT-th collective (counted from 1: the start agreement, the check of the
# settings, the last agreement of the start, the broadcasts of the weights and of the
# optimizer state, the run directory's lock; then step 1's allreduce), so that rank 1 waits
# in that collective; rank 1 writes its process id to `waiting` from its first poll there,
# and the test signals it. AT 0: rank 1 waits for `go` at the end of its own work before the
# start agreement (reading its options, building its task and model), rank 0 in the
# agreement. Where rank 1 takes the signal in
# Python (the handler installed then, wrapped), it first writes `handled`, and the test lets
# rank 0 go on only after that: no sleep and no race decides where the signal lands.
HELD_START = """
import os, signal, sys, time
from pathlib import Path
from rnnlab import distributed
from rnnlab.cli import main, train

at, signum, sync = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])

def say_waiting():
    handler = signal.getsignal(signum)
    if callable(handler):
        def handled(*args):
            (sync / "handled").touch()
            return handler(*args)
        signal.signal(signum, handled)
    (sync / "pid.tmp").write_text(str(os.getpid()))
    os.replace(sync / "pid.tmp", sync / "waiting")

def wait_for_go():
    while not (sync / "go").exists():
        time.sleep(0.01)

calls = [0]

def counted(collective):
    def held(self, *args, **kw):
        calls[0] += 1
        if calls[0] == at and self.rank == 0:
            wait_for_go()
        return collective(self, *args, **kw)
    return held

class Said:
    def __init__(self, request):
        self.request, self.said = request, False
    def Test(self):
        if not self.said:
            self.said = True
            say_waiting()
        return self.request.Test()

wait = distributed.Communicator._wait

def polled(self, request, what):
    if calls[0] == at and self.rank == 1:
        request = Said(request)
    return wait(self, request, what)

prepare = train._prepare_train

def prepared(args, comm):
    out = prepare(args, comm)
    if at == 0 and comm.rank == 1:
        say_waiting()
        wait_for_go()
    return out

for name in ("allreduce", "broadcast", "gather"):
    setattr(distributed.Communicator, name, counted(getattr(distributed.Communicator, name)))
distributed.Communicator._wait = polled
train._prepare_train = prepared
sys.exit(main(sys.argv[4:]))
"""


def held_start(args, cwd, at, signum=signal.SIGINT, timeout=240, **env):
    """`mpiexec -n 2 rnnlab ARGS` as `mpiexec` runs it, both ranks held by HELD_START at
    `at`, where the test sends rank 1 `signum` alone (as `kill -INT PID` does), then lets
    rank 0 go on. Returns the job and the seconds from the signal to the job's end."""
    sync = Path(cwd) / "sync"
    sync.mkdir()
    (Path(cwd) / "rank1").mkdir(exist_ok=True)
    script = Path(cwd) / "held.py"
    script.write_text(HELD_START)
    rank = [sys.executable, str(script), str(at), str(int(signum)), str(sync), *map(str, args)]
    tail = ["-n", "1", *rank, ":", "-n", "1", "-wdir", str(Path(cwd) / "rank1"), *rank]
    sent = []

    def until(name, job):
        deadline = time.monotonic() + timeout
        while not (sync / name).exists():
            assert job.poll() is None, f"the job ended before rank 1 wrote {name!r}"
            assert time.monotonic() < deadline, f"rank 1 never wrote {name!r}"
            time.sleep(0.02)

    def signal_rank_1(job):
        until("waiting", job)
        os.kill(int((sync / "waiting").read_text()), signum)
        sent.append(time.perf_counter())
        until("handled", job)  # (a Python handler: where it runs is known)
        (sync / "go").touch()

    done = launch(tail, cwd, timeout, during=signal_rank_1, **env)
    assert list((Path(cwd) / "rank1").iterdir()) == [], "rank 1 wrote files"
    return done, time.perf_counter() - sent[0]


def test_a_hung_rank_stops_the_others_after_the_timeout(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    start = time.perf_counter()
    done = mpiexec(args, tmp_path, rank1=("stop", 15), RNNLAB_MPI_TIMEOUT="5")
    took = time.perf_counter() - start
    assert done.returncode != 0
    assert "rank 0 of 2 waited 5 s for the other ranks in an allreduce at step 15" in done.stderr
    assert took < 120


def test_ctrl_c_on_one_rank_stops_all_at_the_same_step(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--checkpoint-every", "100"]
    done = mpiexec([*args, "--run-dir", "run"], tmp_path, rank1=("int", 15))
    assert done.returncode == 130, done.stderr
    assert "interrupted (SIGINT on rank 1 of 2): checkpoint saved at step 15" in done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [15]  # one checkpoint, of both ranks


START_INTERRUPTED = ("rnnlab: interrupted: SIGINT (Ctrl-C) on rank 1 of 2 while the ranks "
                     "started: every rank stopped before training; nothing was trained or saved\n")


@pytest.mark.parametrize("at", [0, 1])
def test_ctrl_c_on_one_rank_at_the_start_stops_every_rank_before_training(tmp_path, at):
    """SIGINT to rank 1 alone while it builds its task and model (at 0), or while it waits in
    the start agreement for rank 0 (at 1): every rank stops, exit status 130 as after a
    Ctrl-C during training, each saying which rank it was and that nothing was trained; no
    run directory. Before: at 0 rank 0 said "another rank could not start the run" (exit
    status 131); at 1 rank 0 waited for rank 1 until RNNLAB_MPI_TIMEOUT (600 s; the 60 s
    here make that fail with "waited" instead of a hang)."""
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    done, _ = held_start(args, tmp_path, at, timeout=120, RNNLAB_MPI_TIMEOUT="60")
    assert done.returncode == 130, done.stdout + done.stderr
    assert done.stderr.count(START_INTERRUPTED) == 2, done.stderr
    assert "Traceback" not in done.stderr and "waited" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("at", [2, 3, 6])
def test_ctrl_c_on_one_rank_after_the_start_agreements_stops_after_step_1(tmp_path, at):
    """SIGINT to rank 1 alone while it waits in the check of the settings (at 2), in the
    last agreement of the start (at 3) or in the run directory's lock (at 6, the last
    collective before training): noted, it stops training after its first step, saved, as a
    Ctrl-C during training does. Before: rank 1 stopped, rank 0 hung for ever in MPI_Comm_split_type
    (share_cores), which has no timeout; here the test's 120 s would end it."""
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--checkpoint-every", "100",
            "--run-dir", "run"]  # fmt: skip
    done, _ = held_start(args, tmp_path, at, timeout=120, RNNLAB_MPI_TIMEOUT="60")
    assert done.returncode == 130, done.stdout + done.stderr
    assert "interrupted (SIGINT on rank 1 of 2): checkpoint saved at step 1 in run" in done.stderr
    assert "Traceback" not in done.stderr and "waited" not in done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [1]


def test_every_rank_interrupted_at_the_start_is_named():
    """A Ctrl-C at the terminal reaches every rank (mpiexec forwards it), a `kill -INT`
    one: the line says which, and which signal."""
    from rnnlab.distributed import StartInterrupted, StartTerminated, stop_if_interrupted

    stop_if_interrupted(np.zeros(4))  # (none: nothing raised)
    for flags, said in (([0, 1, 0, 1], "ranks 1, 3 of 4"), ([1, 1], "all 2 ranks"),
                        ([1], "rank 0 of 1")):  # fmt: skip
        with pytest.raises(StartInterrupted, match=f"^SIGINT \\(Ctrl-C\\) on {said} while"):
            stop_if_interrupted(np.array(flags))
    # SIGTERM's code is 2 (signal_code): said first, and the stop is SIGTERM's (status 143)
    for codes, said in (([0, 2], "SIGTERM on rank 1 of 2 while"),
                        ([2, 1, 3], "SIGTERM on ranks 0, 2 of 3, SIGINT \\(Ctrl-C\\) on ranks 1, "
                                    "2 of 3 while")):  # fmt: skip
        with pytest.raises(StartTerminated, match=f"^{said}"):
            stop_if_interrupted(np.array(codes))


@pytest.mark.parametrize("at", [0, 1])
def test_sigterm_to_one_rank_at_the_start_stops_every_rank_before_training(tmp_path, at):
    """SIGTERM to rank 1 alone while it builds its task and model (at 0: it stops that work
    at once) or waits in the start agreement (at 1: noted): as after a Ctrl-C there, every
    rank stops at the agreement, each saying so in one line, exit status 143 (128 + 15); no
    run directory. Before: the rank died of it, and mpiexec ended the other with `BAD
    TERMINATION ... EXIT CODE: 15` (its handler never ran: `handled` was never written)."""
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    done, _ = held_start(args, tmp_path, at, signal.SIGTERM, timeout=120,
                         RNNLAB_MPI_TIMEOUT="60")  # fmt: skip
    assert done.returncode == 143, done.stdout + done.stderr
    said = START_INTERRUPTED.replace("interrupted: SIGINT (Ctrl-C)", "terminated: SIGTERM")
    assert done.stderr.count(said) == 2, done.stderr
    assert "Traceback" not in done.stderr and "waited" not in done.stderr
    assert "BAD TERMINATION" not in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("at,step", [(6, 1), (7, 2)])
def test_sigterm_to_one_rank_as_training_starts_stops_every_rank_saved(tmp_path, at, step):
    """SIGTERM to rank 1 alone in the run directory's lock (at 6, the last collective before
    training: noted, it stops training after step 1) or in step 1's allreduce (at 7, where
    rank 1's word is already given: step 2's carries it): every rank stops after that step,
    rank 0 saves the one checkpoint and says so, exit status 143. Before: the rank died,
    mpiexec ended the other, nothing saved."""
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--checkpoint-every", "100",
            "--run-dir", "run"]  # fmt: skip
    done, _ = held_start(args, tmp_path, at, signal.SIGTERM, timeout=120,
                         RNNLAB_MPI_TIMEOUT="60")  # fmt: skip
    assert done.returncode == 143, done.stdout + done.stderr
    assert done.stderr.count("terminated (SIGTERM on rank 1 of 2): checkpoint saved at step "
                             f"{step} in run; continue with") == 1, done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr and "waited" not in done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [step]


def test_sigterm_on_every_rank_stops_all_at_one_step_and_the_run_resumes(tmp_path):
    """Slurm sends SIGTERM to every rank of a job it ends: each takes it in step 12 (the
    saboteur on both ranks); all stop after that step, rank 0 writes one checkpoint and one
    line naming both ranks, and the job exits with status 143. Resumed (in one process, with
    the global batch), the run ends where one process that never stopped ends, to float32
    summation order (the 2-rank resume is bit for bit: a killed rank's test)."""
    args = [*ADDING, "--batch-size", "4", "--steps", "20", "--checkpoint-every", "100"]
    done = mpiexec([*args, "--run-dir", "cut"], tmp_path, rank0=("term", 12),
                   rank1=("term", 12))  # fmt: skip
    assert done.returncode == 143, done.stdout + done.stderr
    assert done.stderr.count("terminated (SIGTERM on all 2 ranks): checkpoint saved at step 12 "
                             "in cut; continue with: rnnlab train --resume cut\n") == 1, done.stderr
    assert "BAD TERMINATION" not in done.stdout + done.stderr
    assert io.checkpoint_steps(tmp_path / "cut") == [12]
    single(["train", "--resume", tmp_path / "cut", "--quiet"])
    single([*ADDING, "--batch-size", "8", "--steps", "20", "--run-dir", tmp_path / "whole"])
    assert io.load_checkpoint(tmp_path / "cut").step == 20
    assert relative_gap(weights(tmp_path / "cut"), weights(tmp_path / "whole")) < 1e-6


def test_sigterm_to_mpiexec_stops_every_rank_with_one_checkpoint(tmp_path):
    """`timeout` and systemd send SIGTERM to mpiexec, which passes it to the ranks: they
    stop after one step, rank 0 saves once, exit status 143."""
    args = [*ADDING, "--batch-size", "4", "--steps", "100000", "--checkpoint-every", "100000",
            "--eval-every", "100000", "--run-dir", "run"]  # fmt: skip
    (tmp_path / "rank1").mkdir()

    def terminate_once_training(job):
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "metrics.jsonl").exists():  # (step 10 logged)
            assert job.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)

    rank = [sys.executable, "-c", MAIN, *args]
    tail = ["-n", "1", *rank, ":", "-n", "1", "-wdir", str(tmp_path / "rank1"), *rank]
    done = launch(tail, tmp_path, 120, during=terminate_once_training, RNNLAB_MPI_TIMEOUT="60")
    assert done.returncode == 143, done.stdout + done.stderr
    steps = io.checkpoint_steps(tmp_path / "run")
    assert len(steps) == 1 and steps[0] >= 10, steps
    assert done.stderr.count(f"checkpoint saved at step {steps[0]} in run") == 1, done.stderr
    assert "terminated (SIGTERM on " in done.stderr and "waited" not in done.stderr
    assert list((tmp_path / "rank1").iterdir()) == []


def test_a_time_limit_stops_every_rank_with_its_uncounted_evaluation(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--time-limit", "1e-9"]
    done = ok(mpiexec([*args, "--run-dir", "run"], tmp_path))
    assert "(at the stop; early stopping counts the scheduled evaluations only)" in done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [1]
    assert io.load_checkpoint(tmp_path / "run").state["history"] == []


def test_nan_on_one_rank_stops_all_and_keeps_the_good_weights(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--checkpoint-every", "100"]
    done = mpiexec([*args, "--run-dir", "run"], tmp_path, rank1=("nan", 12))
    assert done.returncode == 1, done.stderr
    assert "rank 1 of 2: the loss became nan at step 12" in done.stderr
    assert "rank 1 of 2 found NaN or inf at step 12" in done.stderr  # rank 0's line
    assert "Good weights of step 11 saved by rank 0 in run." in done.stderr  # rank 1 saved none
    assert done.stderr.count("Good weights of step 11 saved in") == 1  # rank 0's
    assert io.checkpoint_steps(tmp_path / "run") == [11]
    assert all(np.isfinite(v).all() for v in weights(tmp_path / "run").values())


def test_an_error_on_one_rank_ends_every_rank(tmp_path):
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    start = time.perf_counter()
    done = mpiexec(args, tmp_path, rank1=("raise", 15))
    assert done.returncode != 0
    assert ("rnnlab: error: rank 1 of 2 stopped at step 15: No space left on device (pretend); "
            "stopping every rank.") in done.stderr  # fmt: skip
    assert time.perf_counter() - start < 120  # not the 600 s timeout


# Rank 0 runs this: its disk is full when it writes the checkpoint of step 20.
FULL_AT_20 = """
import errno, sys
from rnnlab import io
from rnnlab.cli import main

save = io.save_checkpoint

def full(run_dir, step, **kw):
    if step == 20:
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(run_dir, step, **kw)

io.save_checkpoint = full
sys.exit(main(sys.argv[1:]))
"""


def test_a_checkpoint_rank_0_cannot_write_is_named_and_the_run_resumes(tmp_path):
    """Rank 0's full disk at the checkpoint of step 20 was said as "rank 0 of 2 stopped at
    step 21: ...; the run stopped at step 20 ...latest.; stopping every rank" (the step after
    the one saved, and a stray period); the checkpoint before it stays, and resumes."""
    script = tmp_path / "full.py"
    script.write_text(FULL_AT_20)
    args = [*ADDING, "--batch-size", "4", "--steps", "30", "--checkpoint-every", "10",
            "--run-dir", "run"]  # fmt: skip
    tail = ["-n", "1", sys.executable, script, *args, ":", "-n", "1", "-wdir",
            tmp_path / "rank1", sys.executable, "-c", MAIN, *args]  # fmt: skip
    (tmp_path / "rank1").mkdir()
    done = launch(tail, tmp_path, timeout=120, RNNLAB_MPI_TIMEOUT="60")
    assert done.returncode != 0
    assert ("rnnlab: error: rank 0 of 2 stopped at the checkpoint of step 20: [Errno 28] No "
            "space left on device; the run stopped at step 20, whose checkpoint may not be "
            "saved: the checkpoints saved before it are intact; once the cause is fixed, "
            "`rnnlab train --resume run` continues from the latest; stopping "
            "every rank.\n") in done.stderr  # fmt: skip
    assert io.checkpoint_steps(tmp_path / "run") == [10]
    ok(mpiexec(["train", "--resume", tmp_path / "run", "--quiet"], tmp_path))
    assert io.load_checkpoint(tmp_path / "run").step == 30


def test_average_gradients_in_a_loop_of_ones_own(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(
        "import numpy as np\n"
        "from rnnlab import distributed\n"
        "comm = distributed.Communicator()\n"
        "grads = {'w': np.full((2, 3), comm.rank + 1, np.float32), 'b': np.ones(3) * comm.rank}\n"
        "out = distributed.average_gradients(grads, comm)\n"
        "assert np.array_equal(out['w'], np.full((2, 3), 1.5)), out\n"
        "assert np.array_equal(out['b'], np.full(3, 0.5)), out\n"
        "assert grads['w'][0, 0] == comm.rank + 1  # the caller's arrays are left alone\n"
        "params = {'w': np.full(4, float(comm.rank))}\n"
        "comm.broadcast_params(params)\n"
        "assert (params['w'] == 0).all()\n"
        "comm.check_same(params, 'after the broadcast')\n"
        "if comm.rank == 0:  # one writer: the ranks' outputs would interleave\n"
        "    print('ok', comm.size)\n"
    )
    done = ok(launch(["-n", "2", sys.executable, script], timeout=120))
    assert done.stdout == "ok 2\n"  # and rank 1's assertions held: its exit status was 0


def test_resume_refuses_a_charlm_corpus_that_changed_on_every_rank(tmp_path):
    """A distributed --resume takes the run up as one process does (cli.train._prepare_train):
    a corpus edited since the checkpoint is refused on each rank, the record left as it was."""
    data = tmp_path / "data.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 80)
    single(["train", "charlm", "--data", data, "--steps", "2", "--seq-len", "10", "--hidden", "8",
            "--embed", "4", "--batch-size", "4", "--quiet", "--run-dir", tmp_path / "lm"])
    before = (tmp_path / "lm" / "config.json").read_bytes()
    data.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.\n" * 80)
    done = mpiexec(["train", "--resume", tmp_path / "lm", "--steps", "4", "--quiet"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count(f"rnnlab: error: `--resume` must train on the text the run was "
                             f"trained on; '{data}' has changed since") == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "lm" / "config.json").read_bytes() == before
    assert io.load_checkpoint(tmp_path / "lm").step == 2


def test_bad_input_is_one_line(tmp_path):
    args = [*ADDING, "--steps", "10", "--batch-size", "4", "--run-dir", "run"]
    done = mpiexec(args, tmp_path, RNNLAB_MPI_TIMEOUT="soon")
    assert done.returncode == 2
    assert "rnnlab: error: `RNNLAB_MPI_TIMEOUT` must be a positive number of seconds; got 'soon'" \
        in done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr
    done = mpiexec(["demo", "--run-dir", "demo"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("`rnnlab demo` runs in one process; under mpiexec, use") == 2
    # a run of batch 6 resumed on 4 ranks: 6 rows do not split
    single([*ADDING, "--steps", "5", "--batch-size", "6", "--run-dir", tmp_path / "six"])
    done = launch(["-n", "4", sys.executable, "-c", MAIN, "train", "--resume", tmp_path / "six",
                   "--steps", "10", "--quiet"])  # fmt: skip
    assert done.returncode == 2
    assert ("`batch_size` 6 (the global batch) must split evenly over the 4 ranks; it splits "
            "over 1, 2, 3 or 6 ranks") in done.stderr  # (the numbers that would work)
    assert "Traceback" not in done.stderr


# A process an MPI launcher started (PMI_* set) in a Python without mpi4py.
NO_MPI4PY = "import sys; sys.modules['mpi4py'] = None; " + MAIN.removeprefix("import sys; ")


@pytest.mark.parametrize("bad", [[], ["--bogus"]])
def test_a_launched_rank_without_mpi4py_says_so_in_one_line(tmp_path, bad):
    """Started by a launcher, without mpi4py: one line naming the extra to install; with a bad
    option as well, that option's line alone (join_failed_start raised the missing import's
    ImportError from the parser's error handler, a traceback after the option's line)."""
    args = [*ADDING, "--steps", "2", "--batch-size", "4", "--run-dir", "run", *bad]
    done = subprocess.run([sys.executable, "-c", NO_MPI4PY, *args], cwd=tmp_path,
                          env=_env(PMI_SIZE="2", PMI_RANK="0"), capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = ("unrecognized arguments: --bogus" if bad else
            "rnnlab was started by an MPI launcher but mpi4py is not installed; install it "
            "with: pip install 'rnnlab[mpi]'")  # fmt: skip
    assert done.stderr == f"rnnlab: error: {said}" + (" (see rnnlab train -h)" if bad else "") \
        + "\n"  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_training_set_smaller_than_the_global_batch_is_refused_at_the_start(tmp_path):
    """177 pytokens windows, a global batch of 2 x 200: every batch would be all 177 rows,
    which 2 ranks of 200 cannot share. Refused before the run directory is made (each rank
    stopped at step 1 with MPI_Abort, "needs batch_size = 400", and left a config.json)."""
    args = ["train", "pytokens", "--hidden", "8", "--seq-len", "20", "--train-size", "4000",
            "--embed", "4", "--steps", "2", "--quiet", "--run-dir", "run"]  # fmt: skip
    done = mpiexec([*args, "--batch-size", "200"], tmp_path, RNNLAB_MPI_TIMEOUT="60", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count(
        "rnnlab: error: `batch_size` 400 (the global batch: 2 ranks x 200) is larger than the "
        "pytokens task's training set, whose batches then hold all of it, 177 rows; a run on "
        "2 ranks needs --batch-size at most 88 on each of the 2 ranks") == 2, done.stderr
    assert "Traceback" not in done.stderr and "MPI_Abort" not in done.stderr
    assert not (tmp_path / "run").exists()
    ok(mpiexec([*args, "--batch-size", "88"], tmp_path, RNNLAB_MPI_TIMEOUT="60", timeout=120))


def test_ranks_given_other_data_or_settings_are_refused_at_the_start(tmp_path, text):
    """Each rank reads its own --data: rank 1 given the same words in another order (the same
    alphabet, so the same shapes) trained on it without a word, as did a rank 1 given another
    --lr (an MPMD launch); config.json recorded rank 0's. Now every rank stops at the start,
    before the run directory is made, naming the first setting that differs and both values
    (a CRC of the settings named none)."""
    shuffled = tmp_path / "shuffled.txt"
    words = text.read_text().split()
    np.random.default_rng(1).shuffle(words)
    shuffled.write_text(" ".join(words) + "\n")
    args = ["train", "charlm", "--hidden", "8", "--seq-len", "16", "--embed", "4", "--dropout",
            "0", "--steps", "2", "--batch-size", "3", "--quiet", "--run-dir", "run"]  # fmt: skip
    (tmp_path / "rank1").mkdir()
    middle = tmp_path / "middle.txt"  # one character changed, far from the first batch
    chars = text.read_text()
    at = chars.index("gradient", len(chars) // 2 + 5) + 4
    middle.write_text(chars[:at] + "a" + chars[at + 1 :])  # (gradaent: the same alphabet)
    for theirs, said in (
        (["--data", shuffled], "reads other data (its --data or data files"),
        (["--data", middle], "reads other data (its --data or data files"),
        (["--data", text, "--lr", "0.5"], "has other settings (its options or --config) "
         "than rank 0 (--lr 0.5 where rank 0 has 0.002)"),
        (["--data", text, "--cell", "gru"], "has other settings (its options or --config) "
         "than rank 0 (--cell gru where rank 0 has lstm)"),
    ):
        tail = ["-n", "1", sys.executable, "-c", MAIN, *args, "--data", text, ":", "-n", "1",
                "-wdir", tmp_path / "rank1", sys.executable, "-c", MAIN, *args, *theirs]
        done = launch(tail, tmp_path, timeout=120, RNNLAB_MPI_TIMEOUT="60")  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        if "than rank 0" not in said:
            said += ": their first batch or the record of them config.json keeps, a corpus's "
            said += "SHA-256) than rank 0"
        assert done.stderr.count(f"rnnlab: error: rank 1 of 2 {said}: "
                                 "data-parallel training needs every rank") == 2, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
        assert list((tmp_path / "rank1").iterdir()) == []


def test_the_loop_of_ones_own_example_equals_one_process():
    """examples/mpi_loop.py, the documented example: 2 ranks and 1 process (MPI's singleton
    start, no mpiexec) end with the same weights, to float32 summation order."""
    example = str(Path(__file__).resolve().parent.parent / "examples" / "mpi_loop.py")
    two = launch(["-n", "2", sys.executable, example], timeout=120)
    one = subprocess.run([sys.executable, example], env=_env(), capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    norms = [float(ok(d).stdout.rsplit("weight norm ", 1)[1]) for d in (two, one)]
    assert two.stdout.startswith("2 rank(s)") and one.stdout.startswith("1 rank(s)")
    assert abs(norms[0] - norms[1]) < 1e-5 * norms[1]


def test_a_start_that_fails_on_one_rank_ends_every_rank_with_its_error(tmp_path):
    """An error only one rank sees before training (rank 0 cannot make runs/TASK-TIME; rank 1
    cannot read its --config) ends every rank at once, with that error, and leaves no empty run
    directory behind: a short timeout makes a regression fail, not hang."""
    args = [*ADDING, "--steps", "4", "--batch-size", "4"]
    (tmp_path / "runs").write_text("")  # a file where the runs would go
    start = time.perf_counter()
    done = mpiexec(args, tmp_path, RNNLAB_MPI_TIMEOUT="20", timeout=60)
    assert done.returncode != 0
    assert "`base` must be a directory; got 'runs', which is not a directory" in done.stderr
    assert "rank 0 could not create the run directory (its error is above)" in done.stderr
    assert "waited" not in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "runs").unlink()
    bad = [str(a) for a in (*args, "--config", tmp_path / "nonexistent.toml")]
    tail = ["-n", "1", sys.executable, "-c", MAIN, *map(str, args), ":", "-n", "1",
            "-wdir", str(tmp_path / "rank1"), sys.executable, "-c", MAIN, *bad]  # fmt: skip
    done = launch(tail, tmp_path, timeout=60, RNNLAB_MPI_TIMEOUT="20")
    assert done.returncode != 0
    own = [line for line in done.stderr.splitlines() if "Cannot read TOML file" in line]
    assert len(own) == 1 and "does not exist" in own[0], done.stderr
    assert own[0].startswith("rnnlab: error: rank 1 of 2 could not start the run: "), own
    assert "another rank could not start the run (its error is above)" in done.stderr
    assert "waited" not in done.stderr
    assert not (tmp_path / "runs").exists()  # rank 0 made no run directory
    assert time.perf_counter() - start < 20


# Each rank runs this: rank 1 raises OSError between the check of the settings and the first
# step, WHERE "dir" (just after check_same_run, in `rnnlab train`'s making of the run
# directory) or "cores" (in DistributedTrainer.run, before share_cores's collective).
FAILS_AFTER_THE_CHECK = """
import sys
from rnnlab import distributed
from rnnlab.cli import main

where = sys.argv[1]
check, share = distributed.DistributedTrainer.check_same_run, distributed.share_cores

def fail(comm):
    if comm.rank == 1:
        raise OSError(f"rank 1 cannot go on ({where}, pretend)")

def checked(self):
    check(self)
    if where == "dir":
        fail(self.comm)

def shared(comm):
    if where == "cores":
        fail(comm)
    return share(comm)

distributed.DistributedTrainer.check_same_run = checked
distributed.share_cores = shared
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("where", ["dir", "cores"])
def test_an_error_on_one_rank_after_the_check_of_the_settings_ends_every_rank(tmp_path, where):
    """An exception on rank 1 alone after the start's agreements and before training: every
    rank ends at once, rank 1 with its error. Before: rank 1 exited, rank 0 waited for ever
    in share_cores's MPI_Comm_split_type, which has no timeout (the test's 90 s ended it)."""
    script = tmp_path / "fails.py"
    script.write_text(FAILS_AFTER_THE_CHECK)
    (tmp_path / "rank1").mkdir()
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    rank = [sys.executable, str(script), where, *args]
    tail = ["-n", "1", *rank, ":", "-n", "1", "-wdir", str(tmp_path / "rank1"), *rank]
    start = time.perf_counter()
    done = launch(tail, tmp_path, timeout=90, RNNLAB_MPI_TIMEOUT="30")
    assert done.returncode != 0
    said = f"rank 1 cannot go on ({where}, pretend)"
    if where == "dir":  # said in the last agreement of the start: each rank its own line
        assert f"rnnlab: error: rank 1 of 2 could not start the run: {said}\n" in done.stderr, \
            done.stderr  # fmt: skip
        assert "another rank could not start the run (its error is above)" in done.stderr
        assert "Traceback" not in done.stderr
    else:  # in DistributedTrainer.run's guard, which ends every rank (MPI_Abort)
        assert (f"rnnlab: error: rank 1 of 2 stopped at step 1: {said}; stopping every "
                "rank.") in done.stderr, done.stderr  # fmt: skip
    assert "waited" not in done.stderr
    assert list((tmp_path / "rank1").iterdir()) == [], "rank 1 wrote files"
    assert io.checkpoint_steps(tmp_path / "run") == []
    assert time.perf_counter() - start < 30  # not a collective's timeout


def test_two_ranks_log_the_lag_profile_one_process_logs(tmp_path):
    """The lag profile in metrics.jsonl reads the first 16 sequences of the global batch: 2
    ranks of batch 4 log what 1 process of batch 8 logs (not rank 0's 4 rows), to float32
    summation order in the weights."""
    args = [*ADDING, "--steps", "10", "--eval-every", "5", "--grad-log-every", "5"]
    ok(mpiexec([*args, "--batch-size", "4", "--run-dir", "two"], tmp_path, RNNLAB_MPI_TIMEOUT="60",
               timeout=120))  # fmt: skip
    single([*args, "--batch-size", "8", "--run-dir", tmp_path / "one"])

    def lags(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
        return [(r["step"], r["lags"]) for r in rows if r.get("kind") == "gradients"]

    two, one = lags(tmp_path / "two"), lags(tmp_path / "one")
    assert [s for s, _ in two] == [s for s, _ in one] == [5, 10]
    for (_, a), (_, b) in zip(two, one, strict=True):
        assert a is not None and a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(a[name]["norms"], b[name]["norms"], rtol=1e-4)
            assert a[name]["factor_per_step"] == pytest.approx(b[name]["factor_per_step"], 1e-4)


def test_a_rank_that_fails_before_starting_mpi_can_end_the_others(tmp_path):
    """A rank whose options the parser refused (an MPMD launch, `--bogus` on rank 1 only)
    exited before MPI started, and rank 0 spun in MPI's own start until killed: cli.main now
    answers the startup agreement as failed (distributed.join_failed_start), and rank 0, a
    good `rnnlab train`, stops at once."""
    args = [*ADDING, "--steps", "4", "--batch-size", "4", "--run-dir", "run"]
    tail = ["-n", "1", sys.executable, "-c", MAIN, *map(str, args), ":", "-n", "1",
            "-wdir", str(tmp_path / "rank1"), sys.executable, "-c", MAIN, *map(str, args),
            "--bogus"]  # fmt: skip
    (tmp_path / "rank1").mkdir()
    start = time.perf_counter()
    done = launch(tail, tmp_path, timeout=60, RNNLAB_MPI_TIMEOUT="20")
    assert done.returncode != 0
    assert "another rank could not start the run (its error is above)" in done.stderr
    assert "waited" not in done.stderr and not (tmp_path / "run").exists()
    assert time.perf_counter() - start < 20


def test_a_new_run_dir_is_checked_where_rank_0_writes_it_alone(tmp_path):
    """Rank 0 alone writes a new run (no shared filesystem needed), yet every rank checked
    --run-dir: a run left at that path on rank 1's machine (here: in its working directory)
    refused the start, saying 'run' already holds a run, while rank 0's was empty."""
    (tmp_path / "rank1").mkdir()
    single([*ADDING, "--steps", "2", "--batch-size", "4", "--run-dir", tmp_path / "rank1" / "run"])
    before = sorted(p.name for p in (tmp_path / "rank1" / "run").iterdir())
    args = [*ADDING, "--steps", "4", "--batch-size", "4", "--run-dir", "run"]
    tail = ["-n", "1", sys.executable, "-c", MAIN, *args, ":", "-n", "1", "-wdir",
            tmp_path / "rank1", sys.executable, "-c", MAIN, *args]  # fmt: skip
    ok(launch(tail, tmp_path, timeout=120, RNNLAB_MPI_TIMEOUT="60"))
    assert io.load_checkpoint(tmp_path / "run").step == 4
    assert sorted(p.name for p in (tmp_path / "rank1" / "run").iterdir()) == before
    assert io.checkpoint_steps(tmp_path / "rank1" / "run") == [2]  # (rank 1 wrote nothing)


# Rank 1 of the tests below: a rank that exits before it starts MPI, which rnnlab cannot
# answer for (a node without rnnlab, a Python that fails to import it).
NEVER_STARTS = ["-n", "1", sys.executable, "-c", "raise SystemExit(1)"]


# Rank 0 runs this: it writes its process id to the file `waiting` as it begins to import
# mpi4py.MPI (whose import starts MPI), where the test sends it a stop signal.
AT_MPI_START = """
import os, sys
from pathlib import Path
from rnnlab.cli import main

sync = Path(sys.argv[1])

def hook(event, args):
    if event == "import" and args[0] == "mpi4py.MPI" and not (sync / "waiting").exists():
        (sync / "pid.tmp").write_text(str(os.getpid()))
        os.replace(sync / "pid.tmp", sync / "waiting")

sys.addaudithook(hook)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum,said", [(signal.SIGTERM, "Terminated (signal 15)"),
                                         (signal.SIGINT, "Interrupt (signal 2)")])
def test_a_stop_signal_while_mpi_starts_ends_the_job(tmp_path, signum, said):
    """A SIGTERM (`timeout`'s, a plain `kill`'s, Slurm's) or Ctrl-C to a rank waiting in
    MPI_Init for a rank that never starts MPI was noted by rnnlab's handler, which never ran
    there: the job ignored it and waited on until SIGKILL. Now it ends the rank, and mpiexec
    ends the job, saying the signal."""
    script, sync = tmp_path / "at_start.py", tmp_path / "sync"
    script.write_text(AT_MPI_START)
    sync.mkdir()
    args = [*ADDING, "--steps", "4", "--batch-size", "4", "--run-dir", "run"]
    tail = ["-n", "1", sys.executable, script, sync, *map(str, args), ":", *NEVER_STARTS]

    def signal_rank_0(job):
        while not (sync / "waiting").exists():
            assert job.poll() is None, "the job ended before rank 0 started MPI"
            time.sleep(0.02)
        os.kill(int((sync / "waiting").read_text()), signum)

    done = launch(tail, tmp_path, timeout=120, during=signal_rank_0)
    assert done.returncode != 0
    assert said in done.stdout + done.stderr  # (mpiexec's word)
    assert not (tmp_path / "run").exists()


def test_a_rank_left_waiting_in_mpi_init_ends_after_the_timeout(tmp_path):
    """Rank 1 ends before it starts MPI (a node whose Python cannot import rnnlab): rank 0
    waited in MPI_Init for ever, where no Python thread runs and mpiexec does not end the
    job (the test above needs a signal to end it). Now rnnlab's watchdog process ends rank 0
    after RNNLAB_MPI_TIMEOUT, with a line saying why, and mpiexec ends the job."""
    args = [*ADDING, "--steps", "4", "--batch-size", "4", "--run-dir", "run"]
    tail = ["-n", "1", sys.executable, "-c", MAIN, *args, ":", *NEVER_STARTS]
    start = time.perf_counter()
    done = launch(tail, tmp_path, timeout=90, RNNLAB_MPI_TIMEOUT="3")
    assert done.returncode != 0
    assert ("rnnlab: error: rank 0 of 2 waited 3 s for every rank to start MPI (MPI_Init); one "
            "of them ended or hangs before starting it. Stopping (the wait is set by "
            "RNNLAB_MPI_TIMEOUT).") in done.stderr, done.stdout + done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - start < 60


def test_the_start_watchdog_leaves_a_rank_that_starts_mpi_alone():
    """The watchdog is gone once MPI has started, and said nothing: a run of one process
    started as rank 0 of 1 by the environment (MPI's singleton start)."""
    code = ("import os, sys; from rnnlab import distributed; c = distributed.Communicator(); "
            "kids = [p for p in os.listdir('/proc') if p.isdigit() and "
            "open(f'/proc/{p}/stat').read().split()[3] == str(os.getpid())]; "
            "print(c.rank, c.size, len(kids))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=_env(RNNLAB_MPI_TIMEOUT="1"),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 1 0\n" and "waited" not in done.stderr, done.stdout + done.stderr


# Rank 0 runs this: every validation of the adding task overflows (its MSE is inf).
VALID_INF = """
import math, sys
from rnnlab.cli import main
from rnnlab.tasks import synthetic

evaluate = synthetic.Adding.evaluate
synthetic.Adding.evaluate = lambda self, model, split: {
    **evaluate(self, model, split), **({"mse": math.inf} if split == "valid" else {})}
sys.exit(main(sys.argv[1:]))
"""


def test_a_validation_not_finite_stops_every_rank_with_the_weights_saved(tmp_path):
    """Rank 0's validation of inf stops every rank at once, each saving collectively (rank 0
    had gone to save alone while the others waited for its word: two collectives, a hang
    until the timeout, no checkpoint)."""
    script = tmp_path / "valid_inf.py"
    script.write_text(VALID_INF)
    (tmp_path / "rank1").mkdir()
    args = [*ADDING, "--batch-size", "4", "--steps", "40", "--run-dir", "run"]
    tail = ["-n", "1", sys.executable, str(script), *args, ":",
            "-n", "1", "-wdir", str(tmp_path / "rank1"), sys.executable, "-c", MAIN, *args]
    start = time.perf_counter()
    done = launch(tail, tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "the validation mse became inf at step 10" in done.stderr
    assert "rank 1 of 2: rank 0's validation at step 10 was not finite" in done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [10]
    assert list((tmp_path / "rank1").iterdir()) == [], "rank 1 wrote files"
    assert time.perf_counter() - start < 120  # not the 600 s timeout


def test_ranks_that_resume_different_checkpoints_are_refused_at_the_start(tmp_path):
    """Each rank reads the checkpoint itself: rank 1 given a stale copy of the run (its
    step 10, rank 0's step 20; a node's own disk) took up its own step and carried state,
    drew step 10's batches while rank 0 drew step 20's, summed them into one update, and
    ended 10 steps after rank 0, in another collective than rank 0's. Now every rank stops
    at the start, and the run is left as it was."""
    args = [*ADDING, "--batch-size", "8", "--checkpoint-every", "10"]
    single([*args, "--steps", "10", "--run-dir", tmp_path / "stale"])
    shutil.copytree(tmp_path / "stale", tmp_path / "run")
    single(["train", "--resume", tmp_path / "run", "--steps", "20", "--quiet"])
    (tmp_path / "rank1").mkdir()
    resume = ["train", "--steps", "30", "--quiet", "--resume"]
    tail = ["-n", "1", sys.executable, "-c", MAIN, *resume, tmp_path / "run", ":",
            "-n", "1", "-wdir", tmp_path / "rank1", sys.executable, "-c", MAIN, *resume,
            tmp_path / "stale"]  # fmt: skip
    done = launch(tail, tmp_path, timeout=120, RNNLAB_MPI_TIMEOUT="30")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("rnnlab: error: rank 1 of 2 resumed another checkpoint (of step 10) "
                             "than rank 0 (of step 20): `--resume` needs every rank to read the "
                             "same run directory") == 2, done.stderr
    assert "Traceback" not in done.stderr and "waited" not in done.stderr
    # rank 0 said "resuming RUN at step 20" before the refusal, as if it went on
    assert "resuming" not in done.stderr, done.stderr
    # each said the refusal as it is: every rank raised it (no rank's own error)
    assert "could not start the run" not in done.stderr, done.stderr
    assert io.checkpoint_steps(tmp_path / "run") == [10, 20]
    assert io.checkpoint_steps(tmp_path / "stale") == [10]


def test_two_ranks_log_the_loss_one_process_logs_to_float64_rounding(tmp_path):
    """Step 1 (the same weights on both sides): each rank's mean loss, summed in float64 as
    one process's, went through the float32 gradient buffer, and metrics.jsonl said
    1.4670792818069458 where one process says 1.467079296708107 (1e-8 apart, a float32's
    digits); now each rank's share rides in two float32 slots of its own (measured: equal)."""
    args = [*ADDING, "--steps", "1"]
    ok(mpiexec([*args, "--batch-size", "4", "--run-dir", "two"], tmp_path, RNNLAB_MPI_TIMEOUT="60",
               timeout=120))  # fmt: skip
    single([*args, "--batch-size", "8", "--run-dir", tmp_path / "one"])

    def loss(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
        (value,) = [r["loss"] for r in rows if "loss" in r and "split" not in r]
        return value

    two, one = loss(tmp_path / "two"), loss(tmp_path / "one")
    assert two == pytest.approx(one, rel=1e-13, abs=0)
