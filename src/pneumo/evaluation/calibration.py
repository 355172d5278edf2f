"""Post-hoc calibration and prior-shift adaptation.

* Temperature scaling (Guo et al. 2017): one scalar T fitted on validation logits by
  minimizing the negative log-likelihood; it changes confidence, never the ranking.
* Prior-shift adaptation (Saerens, Latinne & Decaestecker 2002): EM re-estimates the class
  priors of an unlabeled batch and re-weights the probabilities accordingly.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from pneumo.inference import softmax


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimizing the NLL of ``softmax(logits / T)``."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)

    def nll(log_t: float) -> float:
        probs = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded")
    return float(np.exp(result.x))


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
