"""scikit-learn estimators over Basis models: inference (in context for in-context models), full fine-tuning
and LoRA. `base.py` holds what both share (the scikit-learn face, fit as numbered steps, save / load);
`regressor.py` and `classifier.py` what each task adds; `strategies/` one object per way of predicting,
chosen once at fit. How a table is read is `basisfm.data.reading`."""

from basisfm.estimators.classifier import BasisClassifier
from basisfm.estimators.finetune import STRATEGIES
from basisfm.estimators.regressor import BasisRegressor

__all__ = ["BasisRegressor", "BasisClassifier", "STRATEGIES"]
