"""scikit-learn estimators over Basis models: inference (in context for in-context models), full fine-tuning
and LoRA. `base.py` holds what both share; `regressor.py` and `classifier.py` what each task adds."""

from basisfm.estimators.classifier import BasisClassifier
from basisfm.estimators.finetune import STRATEGIES
from basisfm.estimators.regressor import BasisRegressor

__all__ = ["BasisRegressor", "BasisClassifier", "STRATEGIES"]
