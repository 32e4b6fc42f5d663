"""The night-shift simulator: replays a reading shift under FIFO and AI ordering (docs/simulation.md)."""

from triage.simulator.engine import (ALL, NEGATIVE, Report, Scenario, ScoresSpec, generate_studies, load_scenario, main,
                                     mean_ci, policy_config, run, scenario_from_dict, shipped_scenarios, write_markdown,
                                     write_plots)

__all__ = ["ALL", "NEGATIVE", "Report", "Scenario", "ScoresSpec", "generate_studies", "load_scenario", "main", "mean_ci",
           "policy_config", "run", "scenario_from_dict", "shipped_scenarios", "write_markdown", "write_plots"]
