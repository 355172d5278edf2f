"""Post-hoc calibration and prior-shift adaptation.

* Temperature scaling (Guo et al. 2017): one scalar T fitted on validation logits by
  minimizing the negative log-likelihood; it changes confidence, never the ranking.
* Prior-shift adaptation (Saerens, Latinne & Decaestecker 2002): EM re-estimates the class
  priors of an unlabeled batch and re-weights the probabilities accordingly. EM needs
  probabilities that are calibrated *including their class priors*, and it needs to know
  those priors. A model trained with balanced class weights has roughly uniform implicit
  priors, not the training frequencies, and temperature scaling cannot move priors. So the
  probabilities are first recalibrated with bias-corrected temperature scaling (a temperature
  and one bias per class, fitted on validation; Alexandari, Kundaje & Shrikumar 2020), after
  which the validation class frequencies are the model's priors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from pneumo.config import flat_config
from pneumo.inference import softmax


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimizing the NLL of ``softmax(logits / T)``."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    result = minimize_scalar(lambda log_t: _nll(logits / np.exp(log_t), labels),
                             bounds=(np.log(0.05), np.log(20)), method="bounded")
    return float(np.exp(result.x))


def fit_bias_corrected_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(T, b) minimizing the NLL of ``softmax(logits / T + b)``, with ``b[0] = 0``."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    classes = logits.shape[1]

    def nll(params: np.ndarray) -> float:
        bias = np.concatenate([[0.0], params[1:]])
        return _nll(logits / np.exp(params[0]) + bias, labels)

    start = np.zeros(classes)
    start[0] = np.log(fit_temperature(logits, labels))
    result = minimize(nll, start, method="L-BFGS-B",
                      bounds=[(np.log(0.05), np.log(20))] + [(-10.0, 10.0)] * (classes - 1))
    return float(np.exp(result.x[0])), np.concatenate([[0.0], result.x[1:]])


def operating_point(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold on P(pneumonia) whose pneumonia sensitivity on (labels, probs) is >= ``target``.

    The highest such threshold keeps specificity as high as the target allows. Class 0 is normal.
    """
    pneumonia = 1 - np.asarray(probs)[:, 0]
    sick = np.asarray(labels) != 0
    if not sick.any():
        raise ValueError("an operating point needs pneumonia images among the labelled ones; got none")
    candidates = np.sort(np.unique(pneumonia[sick]))[::-1]
    for threshold in candidates:
        if (pneumonia[sick] >= threshold).mean() >= target:
            return float(threshold)
    return float(candidates[-1])


@dataclass(frozen=True)
class PriorAdaptation:
    """How to turn logits into probabilities whose class priors are known, for EM.

    ``source`` says where the numbers come from: "validation" when fitted there (BCTS), or
    "assumed from the training recipe" for models without a fit (uniform priors after
    balanced class weights, the training frequencies otherwise).
    """

    temperature: float
    bias: list[float]
    source_priors: list[float]
    source: str

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray) -> "PriorAdaptation":
        temperature, bias = fit_bias_corrected_temperature(logits, labels)
        counts = np.bincount(labels, minlength=np.asarray(logits).shape[1]).astype(np.float64)
        return cls(temperature, bias.round(6).tolist(), (counts / counts.sum()).round(6).tolist(), "validation")

    @classmethod
    def of_model(cls, metadata: dict) -> "PriorAdaptation":
        """The bundle's fitted adaptation, or one assumed from its training recipe."""
        if metadata.get("prior_adaptation"):
            return cls(**metadata["prior_adaptation"])
        classes = len(metadata["classes"])
        training = metadata.get("training", {})
        counts = np.array(training.get("train_class_counts") or [1] * classes, np.float64)
        if flat_config(training.get("config") or {}).get("class_weights") == "balanced":
            counts = np.ones(classes)
        return cls(float(metadata.get("temperature", 1.0)), [0.0] * classes, (counts / counts.sum()).tolist(),
                   "assumed from the training recipe")

    def to_dict(self) -> dict:
        return asdict(self)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, np.float64) / self.temperature + np.asarray(self.bias))

    def adapt(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(adjusted probabilities, estimated priors) for this batch of logits."""
        return adapt_priors(self.probabilities(logits), np.asarray(self.source_priors))


def adapt_priors(probs: np.ndarray, train_priors: np.ndarray, *, iterations: int = 100,
                 tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """EM estimate of new class priors for an unlabeled batch, and the adjusted probabilities.

    Args:
        probs: (N, K) posteriors under the training priors.
        train_priors: (K,) class frequencies the model was trained with.

    Returns:
        (adjusted probabilities (N, K), estimated priors (K,)).
    """
    probs = np.asarray(probs, np.float64)
    train_priors = np.asarray(train_priors, np.float64)
    priors = train_priors.copy()
    adjusted = probs
    for _ in range(iterations):
        weighted = probs * (priors / train_priors)
        adjusted = weighted / weighted.sum(1, keepdims=True)
        new_priors = adjusted.mean(0)
        if np.abs(new_priors - priors).max() < tolerance:
            priors = new_priors
            break
        priors = new_priors
    return adjusted, priors
