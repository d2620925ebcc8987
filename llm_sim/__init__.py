"""llm_sim: train and evaluate language models that predict Grover outcome distributions.

Public names (DESIGN.md): :func:`parse_answer`, :class:`Prediction` and the metrics.
Model, data and training modules import torch/transformers and are imported on use.
"""

from __future__ import annotations

from llm_sim.metrics import (
    Distribution,
    classical_fidelity,
    grover_two_level,
    hellinger,
    marked_probability_error,
    marked_recall,
    mass_error,
    parse_rate,
    score,
    search_accuracy,
    set_accuracy,
    total_variation,
    true_distribution,
)
from llm_sim.parse import Prediction, format_closed_form, parse_answer

__all__ = [
    "Distribution",
    "Prediction",
    "classical_fidelity",
    "format_closed_form",
    "grover_two_level",
    "hellinger",
    "marked_probability_error",
    "marked_recall",
    "mass_error",
    "parse_answer",
    "parse_rate",
    "score",
    "search_accuracy",
    "set_accuracy",
    "total_variation",
    "true_distribution",
]
