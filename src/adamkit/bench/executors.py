"""Executors: where the runs of a sweep execute. Each maps run specs to results, yielding as they finish.

- ``local`` (default): a pool of ``jobs`` worker processes on this machine (``jobs = 1`` runs in this
  process). A worker that dies (segfault, out of memory) breaks the pool: the pool is rebuilt and the
  runs that were in flight are tried again once, then recorded as failed.
- ``ray``: tasks on a Ray cluster (``address``) or on a local Ray instance started for the sweep
  (``pip install 'adamkit[ray]'``), which listens on 127.0.0.1 only (:func:`start_local_ray`). The workers
  must be able to import adamkit.

Both call :func:`adamkit.bench.runner.execute` on the same specs, with one torch thread per run, so
the same suite stores the same results on both. Both take the sweep's ``device`` (``--device``: ``cpu``,
``cuda``, ``cuda:N``) and give it to every run; the runs of tasks that support a device compute there, the
others on the worker's CPU. With a GPU, the ``jobs`` local workers share it (each its own process and CUDA
context); on Ray each run asks for ``1 / jobs`` of a GPU, so ``jobs`` runs share one, and Ray picks the GPU
(``--device cuda``; a ``cuda:N`` is refused there).
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
import os
import signal
import sys
from typing import Any, Iterable, Iterator

from . import devices
from .runner import execute

Job = tuple[str, dict[str, Any]]  # (run hash, spec)


class ExecutorError(RuntimeError):
    """An executor cannot start (Ray unreachable, or not confined to loopback); the message says what to do."""


def _worker_init(parent: int | None = None) -> None:
    """A local worker: one torch thread; on Linux it ends with the sweep that started it (``prctl``
    ``PR_SET_PDEATHSIG``), so a sweep killed by a signal, even SIGKILL, leaves no worker running on."""
    import torch

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGTERM when the parent ends
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the worker ends with its queue
            pass
        if parent is not None and os.getppid() != parent:  # the sweep ended before prctl took effect
            os._exit(1)


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1, device: str = "cpu"):
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.device = devices.parse(device)
        #: the device argument of each run (none on the CPU: ``execute(spec)`` as before devices)
        self._kw = {} if self.device == "cpu" else {"device": self.device}

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Run ``jobs``, yielding each result as it arrives. ``jobs`` is read lazily, one job per free slot
        (so a sweep can claim each run just before it starts); no worker starts before the first job."""
        source = iter(jobs)
        if self.jobs == 1:
            for h, spec in source:
                yield h, spec, execute(spec, **self._kw)
            return
        first = next(source, None)
        if first is None:
            return
        retry: list[Job] = [first]  # runs to (re)submit before new ones

        def take() -> Job | None:
            return retry.pop() if retry else next(source, None)

        attempts: dict[str, int] = {}
        while True:
            ctx = multiprocessing.get_context("spawn")
            pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_worker_init,
                                          initargs=(os.getpid(),))
            inflight: dict[cf.Future, Job] = {}
            try:
                while True:
                    while len(inflight) < 2 * self.jobs:
                        job = take()
                        if job is None:
                            break
                        inflight[pool.submit(execute, job[1], **self._kw)] = job
                    if not inflight:
                        return
                    done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        h, spec = inflight.pop(fut)
                        try:
                            result = fut.result()
                        except cf.process.BrokenProcessPool:
                            inflight[fut] = (h, spec)
                            raise
                        except Exception as exc:  # e.g. an unpicklable result
                            result = {"status": "failed", "final": None, "curve": None,
                                      "error": f"{type(exc).__name__}: {exc}", "seconds": None, "worker": "local"}
                        yield h, spec, result
            except cf.process.BrokenProcessPool:
                # a worker died: retry what was in flight once (the culprit fails twice), then record it
                for fut, (h, spec) in list(inflight.items()):
                    attempts[h] = attempts.get(h, 0) + 1
                    if attempts[h] >= 2:
                        yield h, spec, {"status": "failed", "final": None, "curve": None, "seconds": None,
                                        "worker": "local", "error": "the worker process died during this run "
                                        "(crash or out of memory), twice"}
                    else:
                        retry.append((h, spec))
                inflight.clear()
            finally:
                for fut in inflight:
                    fut.cancel()
                pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    name = "ray"

    def __init__(self, jobs: int = 1, address: str | None = None, device: str = "cpu"):
        self.device = devices.parse(device)
        if ":" in self.device:
            raise ValueError(f"--device {self.device} with --executor ray: give --device cuda (Ray assigns each run "
                             "its GPU)")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError("the Ray executor needs ray: pip install 'adamkit[ray]'") from None
        self.jobs, self.address = jobs, address

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Run ``jobs`` (read lazily, as slots free up) on Ray, yielding each result as it arrives."""
        import ray

        source = iter(jobs)
        try:  # nothing to run: do not start Ray
            source = itertools.chain([next(source)], source)
        except StopIteration:
            return
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except Exception as exc:  # unreachable, refused (authentication), version mismatch, ...
                    first = (str(exc).splitlines() or [type(exc).__name__])[0]
                    raise ExecutorError(
                        f"cannot connect to the Ray cluster at --address {self.address} ({type(exc).__name__}: "
                        f"{first}); check the address, and RAY_AUTH_MODE=token with the cluster's token "
                        f"(RAY_AUTH_TOKEN) when it uses token authentication") from None
            else:
                start_local_ray(self.jobs)
        # a run that asks for no GPU gets none (Ray hides the GPUs from it): on cuda each asks for a share
        gpus = 0 if self.device == "cpu" else 1.0 / max(1, self.jobs)
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(_ray_execute)
        window = 2 * max(self.jobs, int(ray.cluster_resources().get("CPU", 1)))
        inflight: dict[Any, Job] = {}
        try:
            while True:
                while len(inflight) < window:
                    job = next(source, None)
                    if job is None:
                        break
                    inflight[remote.remote(job[1], self.device)] = job
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    h, spec = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the worker died, or the task could not run
                        result = {"status": "failed", "final": None, "curve": None, "seconds": None,
                                  "worker": "ray", "error": f"{type(exc).__name__}: {exc}"}
                    yield h, spec, result
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


#: Ray reads this at import (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``): "0" makes a locally started
#: instance take 127.0.0.1 as its node address. Without it, Ray (2.60) turns ``_node_ip_address="127.0.0.1"``
#: into the host's interface address, and the GCS, raylet and workers listen on every interface.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _is_loopback(host: str) -> bool:
    import ipaddress

    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def ray_addresses() -> dict[str, str]:
    """The addresses the running Ray instance reports: its GCS and each node's raylet (component -> host)."""
    import ray

    out = {"gcs": ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]}
    for node in ray.nodes():
        out[f"raylet {node['NodeID'][:8]}"] = node["NodeManagerAddress"]
    return out


def start_local_ray(jobs: int) -> None:
    """Start a private single-machine Ray instance whose every component listens on 127.0.0.1 only.

    The node address is the loopback one (``_node_ip_address``, and :data:`RAY_LOOPBACK_ENV` so that Ray keeps
    it instead of resolving it to the host's interface; set only while Ray starts, its processes inherit it), no
    dashboard. Every gRPC server of Ray (GCS, raylet, object manager, workers, the driver) binds to 127.0.0.1
    when the node address is 127.0.0.1, and the runtime-env agent listens on the node address. The addresses
    Ray reports are checked: a non-loopback one shuts the instance down and raises :class:`ExecutorError`.
    """
    import ray

    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - another layout: the check below still guards
        ray_constants = None
    saved_env = os.environ.get(RAY_LOOPBACK_ENV)
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[RAY_LOOPBACK_ENV] = "0"
    if saved_flag is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False  # (read at import; ray may be imported already)
    try:
        ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    finally:
        if saved_env is None:
            os.environ.pop(RAY_LOOPBACK_ENV, None)
        else:
            os.environ[RAY_LOOPBACK_ENV] = saved_env
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag
    exposed = {name: host for name, host in ray_addresses().items() if not _is_loopback(host)}
    if exposed:
        ray.shutdown()
        raise ExecutorError(
            "the local Ray instance would listen beyond 127.0.0.1 ("
            + ", ".join(f"{k} on {v}" for k, v in exposed.items())
            + "); refusing to run. Use --executor local, or start a Ray cluster yourself and pass --address")


def _ray_execute(spec: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return execute(spec) if device == "cpu" else execute(spec, device)


def make_executor(name: str, jobs: int = 1, address: str | None = None, device: str = "cpu"):
    if name == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(jobs, device)
    if name == "ray":
        return RayExecutor(jobs, address, device)
    raise ValueError(f"unknown executor {name!r}; choose local or ray")
