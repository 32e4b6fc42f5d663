"""Triage, step 5 of the workflow: from images arriving over DICOM to a place on the worklist.

- ``scp``: the DICOM listener (C-STORE, C-ECHO, the modality worklist C-FIND of ``orders.mwl``);
- ``intake``: ``Intake.store``: each instance written atomically and indexed, linked to its order;
- ``studies``: a study is complete after a quiet period, then one triage job is queued;
- ``service``: the listener and the study monitor together (``IntakeService``); ``listener_group``:
  several listener processes on one port (``readingroom receive --processes N``);
- ``pipeline``: the triage job: series selection, the models (``models.inference``), findings;
- ``priority``: the one rule for "is this finding positive" and the reading order (``decide``, ``place``);
- ``worklist``: the open studies in reading order, claims, the AI panel;
- ``notify``: critical alerts; ``importer``: ``readingroom import``; ``cli``: the triage commands;
- ``simulator/``: the night-shift simulator; ``demo``, ``demo_site``: demo data (images from ``models.phantoms``).

The submodules are imported where they are used: importing ``triage`` loads no model runtime.
"""

__all__ = ["cli", "demo", "demo_site", "importer", "intake", "listener_group", "notify", "pipeline", "priority",
           "scp", "service", "simulator", "studies", "worklist"]
