"""Package layout, and rooivalk-torchvision-fix.pth shipped at the root of the wheel (site-packages).

The core lives in src/rooivalk; the orchestration layer (components/, pipelines/) sits at the repo
root as DESIGN.md lays out, and ships in the same distribution as rooivalk_kfp.components and
rooivalk_kfp.pipelines so that `pip install .` gives a
working `rooivalk run`. The .pth only installs an import hook (no torch import at interpreter
start); see src/rooivalk/_compat/torchvision_fix.py for why the fix exists.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "rooivalk-torchvision-fix.pth"


class BuildWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(str(Path("src") / PTH), str(Path(self.build_lib) / PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


core = find_packages("src", include=["rooivalk", "rooivalk.*"])
# The KFP layer's sources stay at the repository root (DESIGN.md) and install under rooivalk_kfp, a
# name of their own: top-level `components`/`pipelines` would collide with other projects' packages.
orchestration = ["rooivalk_kfp", "rooivalk_kfp.components", "rooivalk_kfp.pipelines"]
setup(
    packages=core + orchestration,
    package_dir={
        "rooivalk": "src/rooivalk",
        "rooivalk_kfp": "src/rooivalk_kfp",
        "rooivalk_kfp.components": "components",
        "rooivalk_kfp.pipelines": "pipelines",
    },
    package_data={"rooivalk_kfp.pipelines": ["plans/*.yaml"]},
    cmdclass={"build_py": BuildWithPth},
)
