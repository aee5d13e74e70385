"""The study on Ray (``python -m grosslib.study run --engine ray``): one Ray task per stage of work.

Tasks, in dependency order (the median design; the per-seed design starts each seed with ``seed k
network``, its own full network and decomposition):

1. ``full network k`` for k in 0..n_networks-1 (skipped when ``networks.json`` already chose them);
2. ``median network``: :func:`grosslib.study.choose_network` (reads the full networks, decomposes the
   median one once, writes ``networks.json``);
3. per seed: ``seed k GroSS alpha a reading`` for every temperature and reading, ``seed k fixed-s`` for
   every fixed baseline, ``seed k search`` (after the searched GroSS networks; it returns the
   configurations picked under the budgets and ranked, each then a task ``seed k fixed <config>``),
   and last ``seed k``: :func:`grosslib.study.run_seed`, which reads every stage back and evaluates.

Each task trains a cached stage of the local engine (:func:`grosslib.study.stage_task`; the full
networks and ``seed k`` run :func:`grosslib.study.seed_task`, what a seed process of the local engine
runs; :func:`grosslib.study.choose_network_task`) on the study directory,
with ``cpus_per_task`` CPUs, ``gpus_per_task`` GPUs and ``threads`` torch threads, so the stage cache,
resuming and the records are those of the local engine. Every node must see the study directory at the
same path (a shared file system) and have grosslib installed.

A failed task is reported with its stage, seed and a one-line reason (the traceback goes to the seed's
``study.log``); the tasks that do not depend on it go on, and :class:`grosslib.study.StudyFailed` is
raised at the end (running again resumes). SIGINT / SIGTERM cancel every task (its worker is killed),
Ray is shut down (a Ray instance started here stops with its workers) and
:class:`grosslib.study.StudyInterrupted` is raised.

Ray is optional (``pip install -e .[ray]``): it is imported only here, inside the functions.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import (
    NETWORKS_FILE,
    StudyFailed,
    StudyInterrupted,
    StudyPlan,
    _on_signals,
    choose_network_task,
    seed_task,
)

__all__ = ["RAY_MISSING", "check_address", "check_ray_args", "ray_session", "require_ray", "run_on_ray"]

#: the one line when ``--engine ray`` is asked for without Ray
RAY_MISSING = "--engine ray needs Ray, which is not installed here: pip install -e .[ray]"

#: environment variables every task needs as this process has them (where data and runs are)
_PASSED_ENV_PREFIXES = ("GROSS_",)


def require_ray() -> Any:
    """The ``ray`` module; a one-line ``ValueError`` (:data:`RAY_MISSING`) when it is not installed."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


def check_address(address: str, timeout: float = 3.0) -> None:
    """A one-line ``ValueError`` unless something listens at ``address`` (``HOST:PORT`` of a head started
    with ``ray start --head``, or ``ray://HOST:PORT`` of its Ray client server); ``auto`` (the cluster
    this machine belongs to) is left to Ray. Fails within ``timeout`` seconds."""
    if address == "auto":
        return
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address {address!r}: expected HOST:PORT (the head's `ray start --head --port "
                         "PORT`, e.g. 10.0.0.1:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            grpc = _speaks_http2(connection)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"--address {address}: nothing answers at {host}:{port} ({reason}); start the Ray "
                         f"head there (`ray start --head --port {port}`) or leave --address out to start Ray "
                         "on this machine") from None
    if not grpc:        # Ray's GCS and its client server speak gRPC; ray.init would retry for minutes
        raise ValueError(f"--address {address}: what answers at {host}:{port} is not a Ray head (no gRPC); "
                         "pass the port of `ray start --head --port PORT` (6379 by default)")


#: the HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5)
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _speaks_http2(connection: socket.socket) -> bool:
    """Whether the server on ``connection`` answers an HTTP/2 preface with a SETTINGS frame (as a gRPC
    server such as Ray's GCS does); a timeout or another answer: False."""
    try:
        connection.sendall(_HTTP2_HELLO)
        answer = b""
        while len(answer) < 9:
            chunk = connection.recv(9 - len(answer))
            if not chunk:
                return False
            answer += chunk
    except OSError:
        return False
    return answer[3] == 0x04


def check_ray_args(address: str | None, cpus_per_task: int | None, gpus_per_task: float | None) -> None:
    """The checks of ``--engine ray``'s options before any work (each failure one ``ValueError`` line):
    Ray installed, ``cpus_per_task >= 1``, ``0 <= gpus_per_task`` and, without ``address``, no more than
    the GPUs of this machine, ``address`` reachable."""
    require_ray()
    if cpus_per_task is not None and cpus_per_task < 1:
        raise ValueError(f"--cpus-per-task must be >= 1, got {cpus_per_task}")
    cores = os.cpu_count() or 1
    if address is None and cpus_per_task is not None and cpus_per_task > cores:
        raise ValueError(f"--cpus-per-task {cpus_per_task} is more than the {cores} CPUs of this machine "
                         "(the Ray instance started here); ask for fewer or pass --address of a larger "
                         "cluster")
    if gpus_per_task is not None:
        if not gpus_per_task >= 0:
            raise ValueError(f"--gpus-per-task must be >= 0, got {gpus_per_task:g}")
        if address is None and gpus_per_task > 0:
            import torch

            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if gpus_per_task > available:
                raise ValueError(f"--gpus-per-task {gpus_per_task:g} is more than the {available} GPUs of "
                                 "this machine; use --gpus-per-task 0 (CPU) or at most the GPU count")
    if address is not None:
        check_address(address)


def _node_capacity(ray: Any) -> dict[str, float]:
    """The most CPUs and GPUs one alive node of the cluster has (a task must fit on one node)."""
    capacity = {"CPU": 0.0, "GPU": 0.0}
    for node in ray.nodes():
        if node.get("Alive", node.get("alive", True)):
            for key in capacity:
                capacity[key] = max(capacity[key], float(node.get("Resources", {}).get(key, 0.0)))
    return capacity


@contextmanager
def ray_session(address: str | None = None, *, cpus_per_task: int = 1,
                gpus_per_task: float = 0.0) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` (None: start a Ray instance on this machine with all
    its CPUs), refuse (one ``ValueError`` line) resources per task no node has, yield ``ray``, and shut
    Ray down on the way out (a Ray instance started here stops, with its workers)."""
    ray = require_ray()
    env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV_PREFIXES)}
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING",
                               "runtime_env": {"env_vars": env} if env else None}
    try:
        if address is None:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        ray.shutdown()
        where = f"the Ray cluster at {address}" if address else "a Ray instance on this machine"
        message = " ".join(str(exc).split())[:300]
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE") is None:
            hint = ("; a head with token authentication (Ray's default) needs RAY_AUTH_MODE=token here and "
                    "its token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
        raise ValueError(f"cannot connect to {where}: {type(exc).__name__}: {message}{hint}") from None
    try:
        capacity = _node_capacity(ray)
        where = f"the Ray cluster at {address}" if address else "this machine's Ray instance"
        for name, wanted, key in (("--cpus-per-task", cpus_per_task, "CPU"),
                                  ("--gpus-per-task", gpus_per_task, "GPU")):
            if wanted > capacity[key]:
                raise ValueError(f"{name} {wanted:g}: no node of {where} has that many {key}s (at most "
                                 f"{capacity[key]:g}); ask for fewer")
        yield ray
    finally:
        ray.shutdown()


def _in_task(function: Callable[..., Any], hide_gpus: bool, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a Ray worker; ``hide_gpus``: a task that asked for no GPU sees none
    (Ray >= 2.48 leaves ``CUDA_VISIBLE_DEVICES`` alone then), so that ``--device auto`` trains on CPU."""
    if hide_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return function(*args, **kwargs)


@dataclass
class _Task:
    name: str                       # 'full network 3', 'median network', 'seed 1 fixed-4', 'seed 1', ...
    stage: str                      # 'full network', 'decomposition', 'GroSS', 'fixed', 'search', 'seed', ...
    seed: int | None
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    #: tasks made from this task's result (the configurations a search picked), and the task that waits
    #: for them too
    expand: Callable[[Any], list[_Task]] | None = None
    then: str | None = None

    def log(self, run_dir: Path) -> Path:
        return run_dir / (f"seed{self.seed}" if self.seed is not None else "") / "study.log"


def _seed_stages(run_dir: Path, seed: int, plan: StudyPlan, threads: int,
                 needs: tuple[str, ...]) -> list[_Task]:
    """One seed as one task per stage: (per-seed design: its network,) GroSS per temperature and reading,
    the fixed baselines, the search (then each configuration it picked or ranks) and ``seed k``
    (:func:`grosslib.study.run_seed`: everything else, reading the stages back)."""
    from . import _table3_order, stage_task

    where = (str(run_dir), seed, threads)
    name = f"seed {seed}"
    tasks: list[_Task] = []
    if plan.design != "median":
        tasks.append(_Task(f"{name} network", "full network + decomposition", seed, stage_task,
                           (*where, "network"), needs=needs))
        needs = (f"{name} network",)
    gross = {}
    for alpha, reading in plan.variants:
        gross[alpha, reading] = f"{name} GroSS alpha {alpha:g}" + (f" {reading}" if alpha else "")
        tasks.append(_Task(gross[alpha, reading], "GroSS", seed, stage_task,
                           (*where, "gross", alpha, reading), needs=needs))
    for size in plan.fixed_group_sizes:
        tasks.append(_Task(f"{name} fixed-{size}", "fixed", seed, stage_task, (*where, "fixed-size", size),
                           needs=needs))

    def trained_alone(configs: list[list[int]]) -> list[_Task]:
        return [_Task(f"{name} fixed {'-'.join(map(str, c))}", "fixed", seed, stage_task,
                      (*where, "fixed", c), needs=(f"{name} search",)) for c in configs]

    searched = tuple(gross.get((plan.search_alpha, r), "") for r in _table3_order(plan))
    tasks.append(_Task(f"{name} search", "search", seed, stage_task, (*where, "search"),
                       needs=tuple(n for n in searched if n), expand=trained_alone, then=name))
    tasks.append(_Task(name, "seed", seed, seed_task, where, needs=tuple(t.name for t in tasks)))
    return tasks


def _tasks(run_dir: Path, seeds: Sequence[int], plan: StudyPlan, threads: int,
           per_stage: bool = True) -> list[_Task]:
    """The tasks of a study (``per_stage=False``: one task per seed) in dependency order."""
    tasks: list[_Task] = []
    needs: tuple[str, ...] = ()
    if plan.design == "median":
        networks = run_dir / NETWORKS_FILE
        chosen = networks.is_file() and json.loads(networks.read_text()).get("seeds") == list(
            range(plan.n_networks))
        full = [] if chosen else [
            _Task(f"full network {k}", "full network", k, seed_task, (str(run_dir), k, threads),
                  {"full_network_only": True}) for k in range(plan.n_networks)]
        tasks += full
        tasks.append(_Task("median network", "decomposition", None, choose_network_task,
                           (str(run_dir), threads), needs=tuple(t.name for t in full)))
        needs = ("median network",)
    for seed in seeds:
        if per_stage:
            tasks += _seed_stages(run_dir, int(seed), plan, threads, needs)
        else:
            tasks.append(_Task(f"seed {seed}", "seed", int(seed), seed_task,
                               (str(run_dir), int(seed), threads), needs=needs))
    return tasks


def _reason(exc: BaseException) -> tuple[str, str]:
    """A failed task's one-line reason and its full traceback (the task's own when Ray carries it)."""
    cause = getattr(exc, "cause", None)
    cause = cause if isinstance(cause, BaseException) else exc
    line = " ".join(str(cause).split())[:300]
    text = str(exc) if cause is not exc else "".join(traceback.format_exception(exc))
    return f"{type(cause).__name__}: {line}" if line else type(cause).__name__, text


def _log_failure(run_dir: Path, task: _Task, text: str) -> Path:
    """Append a failed task's traceback to its log (the seed's ``study.log``, else the study's); the log."""
    entry = f"\n[{datetime.now().isoformat(timespec='seconds')}] Ray task '{task.name}' failed:\n{text}\n"
    for log in (task.log(run_dir), run_dir / "study.log"):
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle:
                handle.write(entry)
            return log
        except OSError:
            continue
    return run_dir


def run_on_ray(run_dir: str | Path, seeds: Sequence[int], plan: StudyPlan, *, threads: int = 1,
               cpus_per_task: int = 1, gpus_per_task: float = 0.0, poll: float = 0.5,
               out: Callable[[str], None] | None = None) -> list[str]:
    """Run every task of the study directory ``run_dir`` on the connected Ray cluster (see the module
    docstring; :func:`ray_session` connects); returns the names of the finished tasks.

    Prints one line per finished, failed or skipped task with the count done so far. Raises
    :class:`StudyFailed` naming every failed task (stage and seed) once the others finished, and
    :class:`StudyInterrupted` on SIGINT / SIGTERM after cancelling every task.
    """
    import ray

    def say(line: str) -> None:
        (out or (lambda text: print(text, flush=True)))(f"[ray] {line}")

    run_dir = Path(run_dir).absolute()
    tasks = _tasks(run_dir, seeds, plan, threads)
    total = len(tasks)
    waiting, running = list(tasks), {}
    done: list[str] = []
    failed: dict[str, str] = {}
    skipped: list[str] = []
    received: list[int] = []
    remote_task = ray.remote(_in_task)
    shared = [t.name for t in tasks if t.stage in ("full network", "decomposition")]
    first = [t.name[len(f"seed {seeds[0]}"):].strip() or "run_seed" for t in tasks
             if t.seed == (seeds[0] if seeds else None) and t.name.startswith("seed ")]
    say(f"{total} tasks so far ({cpus_per_task} CPU, {gpus_per_task:g} GPU, {threads} torch threads each): "
        + ", ".join(shared) + (", then " if shared else "")
        + f"for each of the seeds {', '.join(map(str, seeds))}: "
        + ", ".join(first) + (" (and the configurations the search picks)" if "search" in first else ""))

    def count() -> str:
        parts = [f"{len(done)}/{total} tasks done"]
        if failed or skipped:
            parts.append(f"{len(failed)} failed, {len(skipped)} skipped")
        if running:
            parts.append(f"{len(running)} submitted")
        return ", ".join(parts)

    with _on_signals(lambda signum, frame: received.append(signum)):
        try:
            while not received:
                for task in list(waiting):
                    if any(n in failed or n in skipped for n in task.needs):
                        waiting.remove(task)
                        skipped.append(task.name)
                        say(f"{task.name} skipped: it needs {', '.join(task.needs)}, which did not finish "
                            f"({count()})")
                    elif all(n in done for n in task.needs):
                        waiting.remove(task)
                        remote = remote_task.options(num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                                                     name=task.name)
                        running[remote.remote(task.function, not gpus_per_task > 0, *task.args,
                                              **task.kwargs)] = task
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1, timeout=poll)
                for ref in ready:
                    task = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task's failure is reported, not raised here
                        reason, text = _reason(exc)
                        failed[task.name] = reason
                        log = _log_failure(run_dir, task, text)
                        say(f"{task.name} FAILED (stage {task.stage}"
                            + (f", seed {task.seed}" if task.seed is not None else "")
                            + f"): {reason}; see {log} ({count()})")
                    else:
                        done.append(task.name)
                        more = task.expand(result) if task.expand is not None else []
                        if more:
                            tasks += more
                            waiting += more
                            for later in waiting:
                                if later.name == task.then:
                                    later.needs = (*later.needs, *(t.name for t in more))
                        total = len(tasks)
                        say(f"{task.name} done ({count()})")
        finally:
            stopping = list(running)
            if stopping:                      # interrupted, or an error here: leave no task running
                for ref in stopping:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - finished meanwhile, or already gone
                        pass
    if received:
        stopped = [t.name for t in running.values()]
        finished = [int(s) for s in seeds if f"seed {s}" in done]
        busy = {t.seed for t in running.values()}
        print(f"[ray] stopped: cancelled {', '.join(stopped) or 'nothing'}", file=sys.stderr, flush=True)
        raise StudyInterrupted(received[0], finished=finished,
                               stopped=[int(s) for s in seeds if s in busy and s not in finished],
                               pending=[int(s) for s in seeds if s not in busy and s not in finished],
                               failed=[f"{name} ({reason})" for name, reason in failed.items()])
    if failed or skipped:
        stage_of = {t.name: t for t in tasks}
        described = [f"{name} (stage {stage_of[name].stage}"
                     + (f", seed {stage_of[name].seed}" if stage_of[name].seed is not None else "")
                     + f": {reason})" for name, reason in failed.items()]
        if skipped:
            of = sorted({stage_of[name].seed for name in skipped if stage_of[name].seed is not None})
            described.append(f"{len(skipped)} tasks that needed them skipped (seeds "
                             f"{', '.join(map(str, of))})")
        raise StudyFailed("study failed for " + ", ".join(described) + "; finished stages are kept, run "
                          "again to resume")
    return done
