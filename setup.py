"""Package layout, and rooivalk-torchvision-fix.pth shipped at the root of the wheel (site-packages).

The core lives in src/rooivalk; the orchestration layer (components/, pipelines/) sits at the repo
root as DESIGN.md lays out, and ships in the same distribution so that `pip install .` gives a
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
orchestration = find_packages(".", include=["components", "pipelines"])
setup(
    packages=core + orchestration,
    package_dir={"rooivalk": "src/rooivalk", "components": "components", "pipelines": "pipelines"},
    package_data={"pipelines": ["plans/*.yaml"]},
    cmdclass={"build_py": BuildWithPth},
)
