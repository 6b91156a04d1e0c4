"""What PyTorch ran a benchmark on: its CPU capability and the oneDNN
primitives a piece of work executes (shared by the peer benchmarks)."""
import os
import tempfile

import torch


def cpu_capability():
    return torch.backends.cpu.get_cpu_capability()


def onednn_kernels(run):
    """The distinct oneDNN primitives and implementations `run` executes
    (e.g. "matmul brg_matmul:avx512_core_amx"), from oneDNN's verbose lines,
    which its C code writes to file descriptor 1."""
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(1)
        try:
            os.dup2(log.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                run()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().decode("utf-8", "replace").splitlines()
    found = set()
    for line in lines:
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in fields:
            at = fields.index("exec")
            found.add(f"{fields[at + 2]} {fields[at + 3]}")
    return sorted(found) or ["none: oneDNN ran no primitive"]
