"""scikit-learn estimators over the Basis Transformer: inference, full fine-tuning and LoRA (see base.py)."""

from basisfm.estimators.base import BasisClassifier, BasisRegressor
from basisfm.estimators.finetune import STRATEGIES

__all__ = ["BasisRegressor", "BasisClassifier", "STRATEGIES"]
