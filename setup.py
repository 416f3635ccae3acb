"""Package layout.

The core lives in src/rooivalk; the orchestration layer (components/, pipelines/) sits at the repo
root as DESIGN.md lays out, and ships in the same distribution as rooivalk_kfp.components and
rooivalk_kfp.pipelines so that `pip install .` gives a working `rooivalk run`.
"""

from setuptools import find_packages, setup

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
)
