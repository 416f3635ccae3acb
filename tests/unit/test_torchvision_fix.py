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


def test_apply_is_idempotent_in_process() -> None:
    from rooivalk._compat import torchvision_fix

    torchvision_fix.apply()
    torchvision_fix.apply()
    import torchvision  # noqa: F401
