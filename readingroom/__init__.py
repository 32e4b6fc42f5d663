"""ReadingRoom: an open-source teleradiology reading assistant. Not for clinical use.

The shared kernel lives here: settings, database, storage, the job queue, users and the CLI.
The domain packages sit beside it: ``triage`` (from request and images to a place on the
worklist), ``dictation`` (from voice to a signed report) and ``models`` (the AI models).
"""

__version__ = "0.1.0"

NOT_FOR_CLINICAL_USE = (
    "ReadingRoom is a research and demonstration system. It is NOT FOR CLINICAL USE; "
    "AI results are UNVERIFIED."
)
