import os

import torch

# The Triton backend's kernels run on CPU tensors in Triton's interpreter, which must be chosen before triton is
# imported; where a GPU is present the kernels are compiled instead and its CUDA tests run them.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_configure(config):
    torch.manual_seed(0)
