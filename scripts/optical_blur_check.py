#!/usr/bin/env python3
"""How many of the demo's optical chips counter-drone-sim/1's motion blur blanked, and that v2's does not.

Version 1 drew the blur line in a (length, length) kernel and rotated it with `ndimage.rotate`; a
2-pixel line lost all its mass at most headings, and convolving with the empty kernel (divided by
max(sum, 1e-6)) turned the chip black. This script replays the demo plan's scenes (count 4000,
seed 0: the same scene stream the simulator draws; scenes only, nothing rendered), applies v1's kernel
construction, kept here verbatim, and v2's `motion_blur_kernel`, and prints one JSON object: over
headings 0-355 degrees in 5-degree steps, how many leave each kernel empty per blur length; over the
demo's drone events, the share that are blurred and the share v1 blanked (v2: none).

    .venv/bin/python scripts/optical_blur_check.py [--count 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy import ndimage

from rooivalk.data.simulators.counter_drone import event_scenes
from rooivalk.data.simulators.optical import blur_length, motion_blur_kernel

EMPTY = 1e-6  # v1 divided by max(kernel.sum(), 1e-6): a kernel below this blanks the chip


def v1_kernel(length: int, heading_rad: float) -> np.ndarray:
    """counter-drone-sim/1's blur kernel, as it was in optical.py."""
    kernel = np.zeros((length, length))
    kernel[length // 2, :] = 1.0 / length
    return np.asarray(ndimage.rotate(kernel, math.degrees(heading_rad), reshape=False, order=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    headings = np.radians(np.arange(0, 360, 5))
    empty_by_length = {
        length: {
            "v1": int(sum(v1_kernel(length, float(h)).sum() < EMPTY for h in headings)),
            "v2": int(sum(motion_blur_kernel(length, float(h)).sum() < EMPTY for h in headings)),
        }
        for length in range(2, 8)
    }
    drones = [scene for scene in event_scenes(args.seed, args.count) if scene.label.endswith("drone")]
    blurred = [(s, n) for s in drones if (n := blur_length(s)) is not None]
    blanked_v1 = sum(v1_kernel(n, s.heading_rad).sum() < EMPTY for s, n in blurred)
    blanked_v2 = sum(motion_blur_kernel(n, s.heading_rad).sum() < EMPTY for s, n in blurred)
    print(json.dumps({
        "headings": len(headings),
        "empty_kernels_by_length": empty_by_length,
        "drone_events": len(drones),
        "drone_share_blurred": round(len(blurred) / len(drones), 4),
        "drone_share_blanked_v1": round(blanked_v1 / len(drones), 4),
        "drone_share_blanked_v2": round(blanked_v2 / len(drones), 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
