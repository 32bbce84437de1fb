"""Training on several processes: ``integrate(..., accelerator=, devices=N, strategy="ddp")``.

The engine is PyTorch Lightning Fabric (``lightning_fabric``): it starts the processes, sets up
the process group (gloo on CPU, NCCL on GPUs), gives each process its device and provides the
collectives (all-reduce, all-gather). scferry's own training loop (``scferry.train.fit``) runs
unchanged in every process, with a :class:`Comm` that makes it data-parallel:

- each process (rank) draws its own minibatches from :class:`scferry.sampling.IndexSampler`
  (disjoint cells per step, paired datasets kept paired, a fresh shuffle per epoch; the same
  sampler seed on every rank), and runs the method's loss, minibatch OT included, on them;
- after ``backward`` the gradients are averaged over the ranks (one flat all-reduce per step, what
  DDP's reducer does; parameters without a gradient on every rank keep none), so every rank takes
  the same optimiser step and the replicas stay identical (checked once at the end);
- the epoch-mean losses are averaged over ranks before early stopping looks at them, so all ranks
  stop at the same epoch;
- at the end, batch-norm running statistics are averaged over ranks and state a method kept per
  rank is merged (``Method.merge_ranks``: uniPort's kept OT plans are summed over ranks);
- rank 0 alone returns the trained state; the calling process loads it and writes the results
  (embedding, records), so they are written once.

Why gradients are averaged by ``Comm`` rather than by wrapping the module in DDP: methods are
trained through ``module.loss(batch)``, not ``forward``, and some parameters may get no gradient
in a step (e.g. a decoder of a dataset without specific genes); DDP would need forward
redirection and ``find_unused_parameters`` (a graph walk every step) for that, while one
all-reduce of the flattened gradients is the same arithmetic.

Launch. A library call (also from R through reticulate) cannot re-run the user's script, which
is how Fabric's default ``strategy="ddp"`` launcher starts its processes. So the processes are
started from inside the call by Fabric's multiprocessing launcher: ``fork`` on CPU (POSIX; the
workers inherit the prepared data and model without copying or pickling, nothing is re-imported)
and ``spawn`` on GPUs (CUDA cannot be used in a forked process) or where fork is unavailable. With
``spawn`` the data and model are pickled to the workers, and Python re-imports the caller's main
script in each: a script (not an interactive session, notebook or R) needs the usual
``if __name__ == "__main__":`` guard. The calling process does not train; it waits, then loads
rank 0's result.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import torch

from .train import MinibatchSampler, fit, resolve_device, seeded

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp")


@dataclass(frozen=True)
class Placement:
    """Where training runs: ``device`` (single process: the device; several: the kind, cpu or
    cuda), the number of processes ``devices`` and the strategy ("single" or "ddp")."""

    device: torch.device
    devices: int = 1
    strategy: str = "single"
    start_method: str | None = None  # None: chosen by start_method() (tests may force "spawn")

    @property
    def distributed(self) -> bool:
        return self.devices > 1


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_placement(device: str | torch.device = "auto", accelerator: str = "auto",
                      devices: int = 1, strategy: str = "auto") -> Placement:
    """Check ``device``, ``accelerator``, ``devices`` and ``strategy`` together (before any work)
    and return the :class:`Placement`. ``device`` is the single-process setting (``"cuda:1"``);
    ``accelerator`` the kind of device ("auto": a GPU when one is visible, else the CPU)."""
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATORS:
        raise ValueError(f"accelerator must be 'auto', 'cpu' or 'gpu'; got {accelerator!r}.")
    accelerator = accelerator.lower()
    if isinstance(devices, bool) or not isinstance(devices, Integral) or devices < 1:
        raise ValueError(f"devices must be a positive integer (the number of training processes, "
                         f"one per device); got {devices!r}.")
    devices = int(devices)
    if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise ValueError(f"strategy must be 'auto' or 'ddp' (data-parallel over devices); got {strategy!r}.")
    dev = resolve_device(device)  # the single-process setting, checked as before
    if accelerator == "cpu":
        if dev.type != "cpu" and device != "auto":
            raise ValueError(f"device={device!r} and accelerator='cpu' disagree: pass one of them.")
        dev = torch.device("cpu")
    elif accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("accelerator='gpu' asked for, but no CUDA GPU is visible to torch; use "
                             "accelerator='auto' or 'cpu'.")
        if dev.type != "cuda" and device != "auto":
            raise ValueError(f"device={device!r} and accelerator='gpu' disagree: pass one of them.")
        if dev.type != "cuda":
            dev = torch.device("cuda")
    if devices == 1:
        return Placement(dev, 1, "single")
    named = device if isinstance(device, torch.device) else None if device == "auto" else torch.device(device)
    if named is not None and named.index is not None:
        raise ValueError(f"device={device!r} names one device, but devices={devices} asks for several "
                         f"processes: use accelerator='{'gpu' if dev.type == 'cuda' else 'cpu'}' and "
                         f"devices={devices} (the first {devices} visible), or devices=1.")
    if not torch.distributed.is_available():
        raise ValueError(f"devices={devices} needs torch.distributed, which this torch build lacks; "
                         "use devices=1.")
    if dev.type == "cuda":
        n_gpu = torch.cuda.device_count()
        if devices > n_gpu:
            raise ValueError(f"devices={devices} asks for {devices} GPUs, but {n_gpu} "
                             f"{'is' if n_gpu == 1 else 'are'} visible; use devices={n_gpu} or fewer.")
    else:
        cores = _cpu_count()
        if devices > cores:
            raise ValueError(f"devices={devices} asks for {devices} CPU processes, but this machine "
                             f"gives this process {cores} core(s); use devices={cores} or fewer.")
    return Placement(dev, devices, "ddp")


def check_cells(n_cells: list[int], names: list[str], devices: int) -> None:
    """Every process needs at least 2 cells of every dataset per step (batch normalisation and
    the alignment compare cells with each other)."""
    for n, name in zip(n_cells, names):
        if n < 2 and devices == 1:
            raise ValueError(
                f"dataset {name!r} has {n} cell; integration needs at least 2 cells in every "
                "dataset (batch normalisation and the alignment compare cells with each other). "
                "Drop that dataset, or embed its cells later with scferry.project.")
        if n < 2 * devices:
            raise ValueError(f"dataset {name!r} has {n} cells; with devices={devices} every process "
                             f"needs at least 2 of them per step ({2 * devices} in all). Use "
                             f"devices={max(1, n // 2)} or fewer.")


class Comm:
    """The collectives the training loop needs across ranks, through Fabric."""

    def __init__(self, fabric):
        self.fabric, self.device = fabric, fabric.device
        self.rank, self.world_size = fabric.global_rank, fabric.world_size
        self._pattern, self._seen = None, []

    # torch.distributed's collectives on the process group Fabric set up (Fabric's own wrappers
    # add autograd-aware gathering that is not needed here)
    def sum(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(x) / self.world_size

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """(world_size, *x.shape)."""
        x = x.contiguous()
        out = x.new_empty((self.world_size, *x.shape))
        torch.distributed.all_gather(list(out.unbind(0)), x)
        return out

    @torch.no_grad()
    def average_gradients(self, module: torch.nn.Module) -> None:
        """Every parameter's gradient := its mean over ranks (a rank without one counts as zero;
        a parameter without a gradient on every rank keeps none)."""
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params] + [has])
        flat = self.sum(flat)
        # Which parameters got a gradient on some rank: read from the device only when this rank's
        # own pattern changes (in practice: the first step), not every step; a pattern that
        # changed on another rank alone would leave the replicas apart, which check_in_sync reports.
        local = tuple(p.grad is not None for p in params)
        if local != self._pattern:
            self._pattern, self._seen = local, flat[-len(params):].tolist()
        off = 0
        for p, seen in zip(params, self._seen):
            n = p.numel()
            if seen > 0:
                p.grad = (flat[off: off + n] / self.world_size).view_as(p).clone()
            off += n

    @torch.no_grad()
    def average_state(self, module: torch.nn.Module, names) -> None:
        """The named parameters/buffers (``Method.rank_local_state``) := their mean over ranks."""
        for name in names:
            t = module.get_parameter(name) if name in dict(module.named_parameters()) else module.get_buffer(name)
            t.copy_(self.mean(t))

    @torch.no_grad()
    def average_buffers(self, module: torch.nn.Module) -> None:
        """Floating buffers (batch-norm running statistics) := their mean over ranks; integer
        buffers (counters) are the same on every rank."""
        for b in module.buffers():
            if b.dtype.is_floating_point:
                b.copy_(self.mean(b))

    @torch.no_grad()
    def check_in_sync(self, module: torch.nn.Module) -> None:
        """The replicas must be identical after training (same averaged gradients, same steps)."""
        tensors = [t for t in list(module.parameters()) + list(module.buffers()) if t.numel()]
        if not tensors:
            return
        fp = torch.stack([t.detach().double().sum() for t in tensors] +
                         [t.detach().double().abs().sum() for t in tensors])
        every = self.all_gather(fp)
        if not bool((every == every[0]).all()):
            raise RuntimeError("distributed training went out of sync: the model replicas differ between "
                               "processes after training. This is a bug in scferry; please report it, "
                               "and use devices=1 meanwhile.")


@dataclass
class Job:
    """What every rank needs to train: the built model (on the CPU), the model inputs, the loop
    settings. Plain data, so that it can be pickled to spawned workers."""

    module: torch.nn.Module
    views: list[dict]
    sizes: list[int]
    paired: bool
    seed: int
    fit_kwargs: dict[str, Any] = field(default_factory=dict)


def _rank_seed(seed: int, rank: int) -> int:
    """torch's stream (reparametrisation noise, dropout) of one rank; the sampler's stream is the
    same on every rank (``seed``)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _train_rank(comm: Comm, job: Job):
    dev = comm.device
    module = job.module.to(dev)
    with seeded(_rank_seed(job.seed, comm.rank), dev):
        rng = np.random.default_rng(job.seed)  # the same permutations on every rank
        sampler = MinibatchSampler(job.views, job.sizes, rng, dev, paired=job.paired,
                                   rank=comm.rank, world_size=comm.world_size)
        kwargs = dict(job.fit_kwargs)
        kwargs["progress"] = kwargs.get("progress", True) and comm.rank == 0
        history = fit(module, sampler, comm=comm, **kwargs)
    comm.average_buffers(module)
    module.merge_ranks(comm)
    comm.check_in_sync(module)
    counts = comm.sum(torch.tensor([float(getattr(module, "ot_solves", 0)),
                                    float(getattr(module, "ot_unconverged", 0))], device=dev)).tolist()
    if comm.rank != 0:
        return None
    return {"state": module.state_dict(), "extra": module.extra_state(), "history": history,
            "ot": (int(counts[0]), int(counts[1]))}


def _rank_main(fabric, fn, path, forked, args):
    """What every process runs: ``fn(comm, *args)``; rank 0 saves its result to ``path``.
    Through a file: Fabric's launcher reads its result queue only after every process has exited
    (a result larger than a pipe's buffer would wait for ever), and tensors put on a
    multiprocessing queue travel as shared-memory handles that die with the process.

    A forked process runs torch on one thread, as PyTorch's own DataLoader workers do: GNU
    OpenMP (torch's CPU thread pool) does not survive ``fork``. Once the calling process has run
    any parallel torch operation (torch's default uses every core), the child inherits a thread
    team whose threads do not exist in it, and its first parallel operation waits for them for
    ever. One thread per process is also the layout ``devices`` describes on CPU: one training
    process per core."""
    if forked:
        torch.set_num_threads(1)
    comm = Comm(fabric)
    out = fn(comm, *args)
    if comm.rank == 0:
        torch.save({"result": _to_cpu(out), "pid": os.getpid(), "threads": torch.get_num_threads()}, path)


def _to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def start_method(placement: Placement) -> str:
    """fork on CPU where the platform has it; spawn for CUDA (which cannot be forked)."""
    import multiprocessing as mp
    if placement.start_method is not None:
        return placement.start_method
    if placement.device.type == "cpu" and "fork" in mp.get_all_start_methods():
        return "fork"
    return "spawn"


@contextmanager
def _process_state_restored():
    """Importing Fabric sets environment variables (PYTORCH_NVML_BASED_CUDA_CHECK, ...) and its
    launcher sets MASTER_PORT in the calling process; its logger announces every process at level
    INFO. A library leaves the environment as it found it and does not chatter: both are restored
    on exit (forked workers inherit the quieter logger)."""
    import logging
    before = dict(os.environ)
    import lightning_fabric  # noqa: F401  (sets its logger's level on first import)
    loggers = [logging.getLogger(n) for n in ("lightning_fabric", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k in set(os.environ) - set(before):
            del os.environ[k]
        for k, v in before.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def launch(fn, placement: Placement, *args) -> tuple[Any, dict]:
    """Run ``fn(comm, *args)`` on ``placement.devices`` processes started by Fabric from inside
    this call; returns rank 0's return value and a record of how the processes ran. ``fn`` must
    be a module-level function when processes are spawned (GPUs)."""
    method = start_method(placement)
    backend = "nccl" if placement.device.type == "cuda" else "gloo"
    with _process_state_restored():
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy

        fabric = Fabric(accelerator="cuda" if placement.device.type == "cuda" else "cpu",
                        devices=placement.devices,
                        strategy=DDPStrategy(start_method=method, process_group_backend=backend))
        with tempfile.TemporaryDirectory(prefix="scferry-ddp-") as tmp:
            path = os.path.join(tmp, "rank0.pt")
            try:
                fabric.launch(_rank_main, fn, path, method == "fork", args)
            except torch.multiprocessing.ProcessRaisedException as e:
                raise RuntimeError(f"a training process failed (devices={placement.devices}); its "
                                   f"error:\n{e}") from None
            out = torch.load(path, weights_only=False)
    record = {"devices": placement.devices, "strategy": "ddp", "engine": "lightning_fabric",
              "start_method": method, "backend": backend, "accelerator": placement.device.type,
              "rank0_pid": out["pid"], "threads_per_process": out["threads"]}
    return out["result"], record


def run(job: Job, placement: Placement) -> dict:
    """Train ``job`` on ``placement.devices`` processes; returns rank 0's result (trained state,
    merged extra state, rank-averaged history, summed OT counts) with ``"launch"``, the record of
    how it ran."""
    job.module.to("cpu")
    out, record = launch(_train_rank, placement, job)
    out["launch"] = record
    return out


def iters_per_epoch(n_cells: list[int], sizes: list[int], world_size: int = 1) -> int:
    """An 'epoch' (the loss-averaging and early-stopping unit) covers the largest dataset once
    (over all processes), and at least 50 steps so that small datasets do not stop on noise."""
    return max(50, math.ceil(max(n / (b * world_size) for n, b in zip(n_cells, sizes))))
