"""Where the runs of a sweep compute: ``--device cpu | cuda | cuda:N``.

A sweep's device is where its *tasks* that can use one run: a task declares ``supports_device = True`` (the
image classifiers, the GANs, the character and word language models) and moves its model and data there. Every
other problem (the Tier A problems, which are Python-bound scalar loops, and CPU-bound tasks such as PPO on
MuJoCo) runs on the CPU in the same worker processes, whatever the sweep's device.

Reproducibility on a GPU. Everything random is drawn on the CPU from the run's seed (initial weights, data
order, augmentation, latent noise) and then moved, so a run on ``cuda`` starts from the same weights and sees the
same batches as on ``cpu`` (random numbers drawn inside a model, dropout, come from the device's generator, seeded
from the run's seed). On CUDA each worker process also runs with cuDNN's deterministic algorithms (no
autotuning), ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an operation without a deterministic
CUDA kernel warns once instead of failing), ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and TF32 off (float32 matrix
products in float32, as on the CPU). The results of one device are then repeatable run to run; they equal the
CPU's only up to float rounding (different kernels sum in a different order; dropout masks differ), and the GPU's wall-clock figures
are not the CPU's. So a store holds the runs of one kind of device only: each run records where it computed
(:func:`describe`), the store records its sweep's device, and a sweep on another kind of device (the CPU against
a GPU, or two GPU models) is refused with what to do (:meth:`adamkit.bench.store.ResultStore.check_device`).
"""
from __future__ import annotations

import os
import platform
import re
import warnings
from typing import Any

#: what ``--device`` accepts, for error messages
VALID = "cpu, cuda or cuda:N (N = 0, 1, ...: a GPU's index)"

_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A ``--device`` that is malformed or not available here; the message names the option and what to do."""


def parse(text: Any) -> str:
    """The normalised device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) of ``--device``; DeviceError when
    it is not one of :data:`VALID`."""
    value = str(text).strip().lower() if isinstance(text, str) else None
    match = _PATTERN.match(value) if value else None
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise DeviceError(f"--device must be {VALID}; got {text!r}")
    kind, index = match.groups()
    return kind if index is None else f"{kind}:{int(index)}"


def check_available(device: str) -> None:
    """Raise DeviceError (one line: what is missing, what to do) unless ``device`` can be used in this process."""
    device = parse(device)
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        build = (f"torch {torch.__version__} was built without CUDA" if torch.version.cuda is None
                 else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU")
        raise DeviceError(f"--device {device}: no CUDA device is available here ({build}); run on a machine with "
                          "an NVIDIA GPU and a CUDA build of torch, or use --device cpu")
    count = torch.cuda.device_count()
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                          f"give one of them (or --device cuda)")


def torch_device(device: str):
    """The ``torch.device`` of a ``--device`` string (``"cuda"``: the current CUDA device, index given)."""
    import torch

    device = parse(device)
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def for_problem(problem, device: str):
    """The ``torch.device`` a run of ``problem`` computes on under a sweep on ``device``: the sweep's device for a
    task that declares ``supports_device``, else the CPU."""
    import torch

    if parse(device) == "cpu" or not getattr(problem, "supports_device", False):
        return torch.device("cpu")
    return torch_device(device)


_CONFIGURED: set[str] = set()


def configure(dev) -> None:
    """Per process, once: the deterministic settings of a CUDA device (see the module docstring)."""
    import torch

    if dev.type != "cuda" or str(dev) in _CONFIGURED:
        return
    # read by cuBLAS when it creates its handle: before the first matrix product of this process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.cuda.set_device(dev)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    warnings.filterwarnings("once", message=".*does not have a deterministic implementation.*")
    _CONFIGURED.add(str(dev))


def describe(dev) -> dict[str, Any]:
    """What a run records of where it computed: the device, its name, torch's version, and on CUDA the CUDA and
    cuDNN versions, the compute capability and whether the deterministic settings were on."""
    import torch

    dev = torch.device(dev) if not isinstance(dev, torch.device) else dev
    out: dict[str, Any] = {"device": "cpu" if dev.type == "cpu" else str(dev), "torch": torch.__version__}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        out.update({"device": f"cuda:{index}", "name": props.name, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(), "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "deterministic": bool(torch.backends.cudnn.deterministic
                                          and torch.are_deterministic_algorithms_enabled()),
                    "tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)})
    else:
        out.update({"name": platform.machine() or "cpu", "cpu_capability": torch.backends.cpu.get_cpu_capability()})
    return out


def gpu_models(records) -> list[str]:
    """The GPU models (:func:`identity`) among run records, sorted: more than one only where runs of one sweep
    computed on different GPUs (a Ray cluster of mixed nodes); the CLI says so after the sweep."""
    return sorted({identity(r) for r in records if r and r.get("device", "cpu") != "cpu"})


def identity(record: dict[str, Any] | None) -> str:
    """The kind of device whose results may be pooled: ``"cpu"``, or ``"cuda (<GPU name>)"`` (the index is
    not part of it: two GPUs of one model pool). A missing record (a store written before devices were
    recorded) is the CPU's."""
    if not record or record.get("device", "cpu") == "cpu":
        return "cpu"
    return f"cuda ({record.get('name', '?')})"
