"""Kept only so that models registered before serving moved to `basisfm.estimators.pyfunc` still load.

MLflow copied the entry script into each registered model, and the copies in models logged until then run
`from basisfm.tracking.pyfunc_model import BasisPyfuncModel`. Nothing in basisfm imports this module;
new models log `basisfm/estimators/pyfunc_entry.py`.
"""

from basisfm.estimators.pyfunc import BasisPyfuncModel

__all__ = ["BasisPyfuncModel"]
