"""AI models: networks, phantoms, training, ONNX export, the registry and evaluation.

Every set of weights lives in ``models/weights/<name>/`` beside its model card
(``metadata.json``). No model here is clinically validated: outputs are UNVERIFIED.
"""
