"""MLflow "models from code" entry: logged as the model's code, so the model is rebuilt on load, never unpickled."""

from mlflow.models import set_model

from basisfm.estimators.pyfunc import BasisPyfuncModel

set_model(BasisPyfuncModel())
