"""The Lab tab: model evaluation (score a triage model on a folder of studies, or on a sample set
it writes) and the night-shift simulation (triage.simulator). Only the Gradio wiring is here; what
the evaluation does is in workstation/lab.py.

Every Lab action needs a logged-in user. The evaluation reads only a folder under the Lab's data
roots or an upload (workstation/lab.py: LabPaths), for every user, admins included; the
simulation runs only the shipped scenarios, by name."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations here

from workstation.page_context import PageContext, Refused, guarded, username

log = logging.getLogger(__name__)


@dataclass
class EvaluationArea:
    """The Lab's model evaluation components."""

    model: gr.Dropdown
    data: gr.Textbox
    labels: gr.Textbox
    upload: gr.File
    evaluate_btn: gr.Button
    sample_btn: gr.Button
    sample_md: gr.Markdown
    table: gr.Markdown
    plots: gr.Gallery


@dataclass
class SimulationArea:
    """The Lab's night-shift simulation components."""

    scenario: gr.Dropdown
    seeds: gr.Slider
    simulate: gr.Button
    table: gr.Markdown
    plots: gr.Gallery


def logged_in(request: gr.Request | None) -> str:
    """The user of a Lab request; Refused without a login."""
    user = username(request)
    if not user:
        raise Refused("Log in to use the Lab.")
    return user


def build_lab(ctx: PageContext) -> None:
    """Lay out the Lab tab and wire the evaluation and the simulation. The models and the
    simulator are imported here, when the page is built."""
    from models.registry import WEIGHTS_DIR, all_models, load_config
    from readingroom.settings import PROJECT_ROOT

    settings = ctx.settings
    model_config = load_config(settings.config_dir / settings.models.file)
    model_names = [c.name for c in all_models(WEIGHTS_DIR, model_config, PROJECT_ROOT)]
    with ctx.tab("Lab", "lab"):
        evaluation = _evaluation_area(ctx, model_names)
        simulation = _simulation_area()
    _wire_simulation(simulation)
    _wire_evaluation(ctx, evaluation, model_config)


def _evaluation_area(ctx: PageContext, model_names: list[str]) -> EvaluationArea:
    from workstation.lab import SAMPLE_STUDIES, LabPaths

    roots = " or ".join(f"`{r}`" for r in LabPaths.from_settings(ctx.settings).roots) or "(none set)"
    gr.Markdown("### Model evaluation\nScore a triage model on a folder of DICOM studies with a "
                f"labels CSV (the phantom format; docs/models.md): a folder under {roots}, or upload "
                "a zip of studies and a labels CSV. No folder yet? *Make a sample set* writes "
                "synthetic studies for the chosen model. Results are UNVERIFIED.")
    with gr.Row():
        model = gr.Dropdown(model_names, value=(model_names or [None])[0], label="Model", scale=1)
        # Filled when the page loads, and only with a folder that exists (workstation/lab.py).
        data = gr.Textbox(label="Data folder", scale=2, elem_id="rr-eval-data",
                          placeholder="a folder of DICOM studies with labels.csv, "
                                      "or press Make a sample set")
        labels = gr.Textbox(label="Labels CSV (default: labels.csv in the folder)", scale=2)
        with gr.Column(scale=0, min_width=200):
            evaluate_btn = gr.Button("Run evaluation", variant="primary")
            sample_btn = gr.Button(f"Make a sample set ({SAMPLE_STUDIES} studies)", size="sm",
                                   elem_id="rr-eval-sample")
    upload = gr.File(label="Or upload: a zip of study folders and/or a labels CSV", file_count="multiple",
                     file_types=[".zip", ".csv"], type="filepath", height=100, elem_id="rr-eval-upload")
    sample_md = gr.Markdown("", elem_id="rr-eval-sample-note")
    table = gr.Markdown(elem_id="rr-eval-table")
    plots = gr.Gallery(label="ROC, calibration and confusion plots", columns=3, height=360,
                       elem_id="rr-eval-plots")
    return EvaluationArea(model=model, data=data, labels=labels, upload=upload, evaluate_btn=evaluate_btn,
                          sample_btn=sample_btn, sample_md=sample_md, table=table, plots=plots)


def _simulation_area() -> SimulationArea:
    from triage.simulator import shipped_scenarios

    gr.Markdown("### Night-shift simulation\nWhat a triage policy does to report turnaround "
                "(RTAT) per finding. Simulated studies; see docs/simulation.md.")
    with gr.Row():
        scenario = gr.Dropdown(shipped_scenarios(), value=(shipped_scenarios() or [None])[0],
                               label="Scenario")
        seeds = gr.Slider(1, 20, value=5, step=1, label="Seeds")
        simulate = gr.Button("Run simulation", variant="primary")
    table = gr.Markdown(elem_id="rr-sim-table")
    plots = gr.Gallery(label="RTAT charts", columns=2, height=420, elem_id="rr-sim-plots")
    return SimulationArea(scenario=scenario, seeds=seeds, simulate=simulate, table=table, plots=plots)


def _wire_simulation(area: SimulationArea) -> None:
    """Run simulation: the scenario over the seeds, its RTAT table and charts."""

    @guarded("Run the simulation")
    def run_simulation(name: str, n_seeds: float, request: gr.Request, progress=gr.Progress()):
        import tempfile

        from triage.simulator import load_scenario, run, shipped_scenarios, write_markdown, write_plots
        from triage.simulator.scenario import SCENARIO_DIR

        logged_in(request)
        if not name:
            raise Refused("Choose a scenario in the list first.")
        if name not in shipped_scenarios():          # a name, never a path on the server
            raise Refused(f"No scenario {name!r}. Choose one of the scenarios in the list.")
        progress(0.1, desc=f"Simulating {name} over {int(n_seeds)} seeds…")
        started = time.perf_counter()
        report = run(load_scenario(SCENARIO_DIR / f"{name}.yaml"), seeds=int(n_seeds))
        progress(0.8, desc="Plotting…")
        out = Path(tempfile.mkdtemp(prefix="rr-sim-"))
        plots = write_plots(report, out)
        table_md = write_markdown(report, out / "report.md").read_text()
        return f"{table_md}\n\n*{time.perf_counter() - started:.1f} s*", [str(p) for p in plots]

    area.simulate.click(run_simulation, inputs=[area.scenario, area.seeds], outputs=[area.table, area.plots])


def _wire_evaluation(ctx: PageContext, area: EvaluationArea, model_config: dict[str, Any]) -> None:
    """Run evaluation, Make a sample set, and the data folder suggested for the chosen model."""
    from models.registry import WEIGHTS_DIR, find_model
    from readingroom.settings import PROJECT_ROOT
    from workstation.lab import (
        SAMPLE_STUDIES, LabPaths, data_for_model, evaluate_folder, evaluation_inputs, make_sample, model_task,
        save_upload,
    )

    settings = ctx.settings
    paths = LabPaths.from_settings(settings)

    def lab_card(name: str | None):  # a ModelCard
        card = find_model(name, WEIGHTS_DIR, model_config, PROJECT_ROOT) if name else None
        if card is None:
            raise Refused(f"No model {name!r}. Choose one of the models in the list.")
        return card

    @guarded("Run the evaluation")
    def run_evaluation(name: str, data: str, labels: str, request: gr.Request,
                       progress=gr.Progress(track_tqdm=True)):
        import tempfile

        user = logged_in(request)
        evaluation_inputs(paths, data, labels)            # a bad folder is said before the model loads
        card = lab_card(name)
        log.info("Lab: %s evaluates %s on %s", user, card.name, data.strip())
        return evaluate_folder(card, paths, data, labels, Path(tempfile.mkdtemp(prefix="rr-eval-")),
                               rules=model_config["rules"], progress=True)

    area.evaluate_btn.click(run_evaluation, inputs=[area.model, area.data, area.labels],
                            outputs=[area.table, area.plots])

    @guarded("Upload to the Lab")
    def upload_files(files: list[str] | None, request: gr.Request):
        logged_in(request)
        if not files:
            return gr.skip(), gr.skip(), gr.skip()
        data, labels = save_upload(paths, files)
        note = ("Uploaded: " + (f"studies in `{data}`" if data else "")
                + (" and " if data and labels else "") + (f"labels `{labels}`" if labels else "")
                + ". Press Run evaluation.")
        # A zip alone: its own labels.csv (the box empties); a CSV alone: the data folder stays.
        return data or gr.skip(), labels if labels or data else gr.skip(), note

    area.upload.upload(upload_files, inputs=area.upload, outputs=[area.data, area.labels, area.sample_md])

    @guarded("Make a sample set")
    def make_sample_set(name: str, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        logged_in(request)
        task = model_task(lab_card(name))
        progress(0, desc=f"Writing {SAMPLE_STUDIES} SYNTHETIC studies…")
        folder, written = make_sample(settings.home, task, progress=True)
        done = "Wrote" if written else "Using the sample set already in"
        note = (f"{done} `{folder}`: {SAMPLE_STUDIES} SYNTHETIC {task} studies and their labels.csv "
                "(the same as `readingroom phantoms`). Press Run evaluation.")
        gr.Info(f"Sample set ready: {folder}", title="Make a sample set")
        return str(folder), "", note

    area.sample_btn.click(make_sample_set, inputs=area.model, outputs=[area.data, area.labels, area.sample_md])

    def lab_task(name: str | None) -> str | None:
        card = find_model(name, WEIGHTS_DIR, model_config, PROJECT_ROOT) if name else None
        return model_task(card) if card is not None else None

    @guarded("Suggest a data folder", quiet=True)
    def lab_defaults(name: str | None, current: str):  # at load and on a model change
        return data_for_model(settings.home, lab_task(name), current)

    ctx.blocks.load(lab_defaults, inputs=[area.model, area.data], outputs=area.data)
    area.model.change(lab_defaults, inputs=[area.model, area.data], outputs=area.data)
