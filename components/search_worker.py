"""KFP adapter for rooivalk.steps.search_steps.search_worker (one worker pod of a plan's search)."""

from kfp import dsl

from rooivalk_kfp.components.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def search_worker(plan: dict, parent_run_id: str, dataset: dsl.Input[dsl.Dataset], worker: int):
    """Run this worker's share of the search's trials on the shared study; trials nest under its run."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.search_steps import search_worker as run

    with pipeline_step("search_worker", plan, parent_run_id) as step:
        step.record(run(plan, step.run_id, dataset.path, worker, run_key=parent_run_id), {}, worker=worker)
