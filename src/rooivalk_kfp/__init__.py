"""The orchestration layer: Kubeflow Pipelines components and pipelines over the rooivalk core.

The sources live at the repository root (`components/`, `pipelines/`); the distribution installs them
as `rooivalk_kfp.components` and `rooivalk_kfp.pipelines`, so that no generic top-level name
(`components`, `pipelines`) lands in site-packages. The core (`rooivalk`) never imports this package;
only the CLI's run/compile/submit commands do, lazily.
"""
