"""Reports name the CPU they measured on (rooivalk.machine)."""

from __future__ import annotations

import platform
from pathlib import Path

from rooivalk import machine


def test_the_cpu_model_comes_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\n")
    assert machine.cpu_model(cpuinfo) == "AMD EPYC 9454P 48-Core Processor"


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path: Path) -> None:
    assert machine.cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())
    (tmp_path / "empty").write_text("processor\t: 0\nmodel name\t:\n")
    assert machine.cpu_model(tmp_path / "empty") == (platform.processor() or platform.machine())


def test_the_description_names_model_architecture_and_cores() -> None:
    text = machine.describe()
    assert text.startswith(machine.cpu_model())
    assert f"({platform.machine()}), {machine.cpu_count()} CPU cores" in text
    assert machine.cpu_count() >= 1
