"""The floor under :mod:`adamkit.optim` and :mod:`adamkit.kernels`: the contract both sides read.

* :mod:`.declaration` — what an algorithm module declares (hyperparameters, ``Flags``/``Scalars``,
  ``Coefficients``, the fused kernel's slots) and the list of declared algorithm classes;
* :mod:`.hyperparameters` — the hyperparameters every adamkit optimizer has;
* :mod:`.checks` — the checks of hyperparameter values;
* :mod:`.state_format` — the storage formats of low-precision state, followed bit for bit by every path;
* :mod:`.tensors` — the dtype and DTensor helpers every layer uses;
* :mod:`.benchspec` — what the benchmark reads of an optimizer.

Nothing here imports the engine, the backends or the benchmark: the engine (``optim``) and the backends
(``kernels``) both stand on this floor, and the benchmark on the public API above them.
"""
