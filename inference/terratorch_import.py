"""Import terratorch once, on a short-lived thread, so that no caller's frame is kept alive.

terratorch's first import raises and catches an ``ImportError`` inside itself (a CUDA-only
extension, ``detr_ops/functions/ms_deform_attn_func.py``) and keeps the exception. Its
traceback keeps every frame of the importing stack: imported from inside
``build_terramind``, that frame — and the model it later holds in a local — stays alive for
the life of the process (the first model built was never freed by ``unload()``).

Importing on a fresh thread gives the kept traceback only that thread's frames, which hold
nothing. Every ``inference`` module calls :func:`import_terratorch` before its first
``from terratorch… import``.
"""

from __future__ import annotations

import importlib
import sys
import threading

_LOCK = threading.Lock()


def import_terratorch() -> None:
    """Import ``terratorch.registry`` (and so terratorch's registries) on a helper thread.

    Cheap after the first call. An import failure is re-raised here, in the caller's thread.
    """
    if "terratorch.registry" in sys.modules and "terratorch" in sys.modules:
        return
    with _LOCK:
        if "terratorch.registry" in sys.modules and "terratorch" in sys.modules:
            return
        failure: list[BaseException] = []

        def run() -> None:
            try:
                importlib.import_module("terratorch.registry")
            except BaseException as err:  # re-raised in the caller's thread below
                failure.append(err)

        thread = threading.Thread(target=run, name="terratorch-import", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
