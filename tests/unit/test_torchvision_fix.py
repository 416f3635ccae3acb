"""The torchvision CPU fix: lazy (no torch at interpreter start) and effective (timm imports)."""

import subprocess
import sys


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


def test_interpreter_start_does_not_import_torch() -> None:
    assert _python("import sys; print('torch' in sys.modules)") == "False"


def test_timm_and_torchvision_import_and_nms_runs() -> None:
    code = (
        "import timm, torch, torchvision;"
        "boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]]);"
        "print(torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())"
    )
    assert _python(code) == "[0, 2]"


def test_apply_twice_registers_once_and_nms_still_runs() -> None:
    # In a fresh interpreter: a second apply() must neither raise (a second `define` of the ops would)
    # nor undo the first; torchvision then imports and its nms op gives the right boxes.
    code = (
        "from rooivalk._compat import torchvision_fix as fix; fix.apply(); fix.apply();"
        "import torch, torchvision;"
        "boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]]);"
        "print(fix._state['applied'], torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())"
    )
    assert _python(code) == "True [0, 2]"
