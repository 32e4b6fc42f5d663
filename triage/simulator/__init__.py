"""The night-shift simulator: replays a reading shift under FIFO and AI ordering (docs/simulation.md).

Modules, one concern each:

* ``scenario`` -- the typed scenario file, loading it, the shipped scenarios;
* ``scores`` -- per-study AI scores files (``readingroom evaluate``'s CSV);
* ``policy`` -- the priority policy a scenario runs (triage.priority's, with its overrides);
* ``studies`` -- the night's studies, drawn before the run (common random numbers);
* ``engine`` -- the discrete-event run (simpy) and ``run`` over seeds and policies;
* ``stats`` -- mean with a 95 % CI per finding, and the Report;
* ``output`` -- the Report as CSV, JSON, markdown and plots;
* ``cli`` -- ``readingroom simulate``.
"""

import logging

from triage.simulator.cli import main
from triage.simulator.engine import run, simulate
from triage.simulator.output import write_markdown, write_plots
from triage.simulator.policy import policy_config
from triage.simulator.scenario import ALL, NEGATIVE, Scenario, load_scenario, scenario_from_dict, shipped_scenarios
from triage.simulator.scores import ScoresSpec, read_scores
from triage.simulator.stats import Report, mean_ci
from triage.simulator.studies import generate_studies

log = logging.getLogger(__name__)

__all__ = ["ALL", "NEGATIVE", "Report", "Scenario", "ScoresSpec", "generate_studies", "load_scenario", "main",
           "mean_ci", "policy_config", "read_scores", "run", "scenario_from_dict", "shipped_scenarios", "simulate",
           "write_markdown", "write_plots"]
