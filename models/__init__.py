"""AI models: networks, phantoms (a package), the one DICOM series reader (series), inference,
training, ONNX export, the registry and evaluation.

Every set of weights lives in ``models/weights/<name>/`` beside its model card
(``metadata.json``). No model here is clinically validated: outputs are UNVERIFIED.
"""

# The submodules are imported where they are used: importing ``models`` loads neither torch nor
# ONNX Runtime.
__all__ = ["check", "cli", "evaluate", "export", "inference", "metrics", "networks", "phantoms", "preprocess",
           "registry", "series", "train"]
