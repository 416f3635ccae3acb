"""Make a CUDA torchvision wheel importable next to the CPU torch build.

PyPI's torchvision is a CUDA build; with the CPU torch wheel its compiled ops fail to load and
`import torchvision` (hence `import timm`) dies with "operator torchvision::nms does not exist"
(pytorch/vision#9085). Before torchvision's first import we try to load its `_C` library; only when
that fails do we define the `nms`/`qnms` schemas with a pure-torch CPU kernel, which is all that
torchvision's import-time meta registrations need. Where torch and torchvision match (GPU images)
the library loads and nothing else happens.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_state: dict[str, Any] = {"applied": False, "library": None}


def _cpu_nms(dets: Any, scores: Any, iou_threshold: float) -> Any:
    import torch

    # dets: (N, 4) boxes as x1, y1, x2, y2; scores: (N,). Returns kept indices, highest score first.
    order = scores.argsort(descending=True)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep = []
    for index in order.tolist():
        if suppressed[index]:
            continue
        keep.append(index)
        w = (torch.minimum(x2[index], x2) - torch.maximum(x1[index], x1)).clamp(min=0)
        h = (torch.minimum(y2[index], y2) - torch.maximum(y1[index], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[index] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=dets.device)


def _ops_exist(torch: Any) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return True
    except RuntimeError:
        return False


def apply() -> None:
    """Idempotent; call before torchvision is first imported."""
    if _state["applied"] or "torchvision" in sys.modules:
        return
    _state["applied"] = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    if _ops_exist(torch):
        return
    for library_path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so")):
        try:
            torch.ops.load_library(str(library_path))  # type: ignore[no-untyped-call]
        except (OSError, RuntimeError):
            continue
        if _ops_exist(torch):
            return
    library = torch.library.Library("torchvision", "FRAGMENT")  # type: ignore[no-untyped-call]
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
        library.impl(op, _cpu_nms, "CPU")  # type: ignore[no-untyped-call]
    _state["library"] = library  # the registration lives as long as this object


class _FirstImportHook:
    """A meta-path finder that applies the fix when torchvision is first imported, then leaves."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            apply()
        return None


def install_hook() -> None:
    """Called from rooivalk's .pth at interpreter start: costs a list append, never imports torch."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _FirstImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImportHook())


def write_pth(site_dir: str | None = None) -> Path:
    """Write the .pth hook into site-packages (the wheel ships it; editable installs need this)."""
    import sysconfig

    target = Path(site_dir or sysconfig.get_paths()["purelib"]) / "rooivalk-torchvision-fix.pth"
    target.write_text("import rooivalk._compat.torchvision_fix as _rooivalk_tv; _rooivalk_tv.install_hook()\n")
    return target


if __name__ == "__main__":
    print(write_pth())
