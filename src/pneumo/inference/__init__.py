"""The one path from pixels to an answer, shared by predict, evaluate, serve and the scripts.

``logits``: a model's logits for a batch of prepared images (PyTorch; ONNX Runtime is in
``pneumo.predict``); ``calibration``: temperature scaling, the operating point and prior-shift
adaptation; ``decision``: probabilities -> class, with the rule and a reason in words.
"""

from pneumo.inference.logits import predict_logits, softmax

__all__ = ["predict_logits", "softmax"]
