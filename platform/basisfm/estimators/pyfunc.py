"""Serving a registered model: the MLflow pyfunc wrapper of a consolidated checkpoint fills missing numeric cells.

`mlflow.pyfunc.load_model("models:/basisfm@champion").predict(frame)` returns `frame` with every missing
cell of its numeric columns predicted by the Basis Transformer from the rest of the table, in context
(no training): each such column is the target of a `BasisRegressor(strategy="inference")` fitted on the
rows where it is present. The checkpoint is loaded from safetensors; nothing here unpickles.

MLflow logs `pyfunc_entry.py` next to this file as the model's code ("models from code") and runs its
copy when the model is loaded; `basisfm.tracking` names that file but never imports the estimators.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class BasisPyfuncModel(mlflow.pyfunc.PythonModel):
    """Predicts the missing cells of numeric columns; other cells come back unchanged."""

    def load_context(self, context) -> None:
        self.checkpoint_dir = context.artifacts["checkpoint"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from basisfm.errors import InputTypeError

        if not isinstance(model_input, pd.DataFrame):
            raise InputTypeError(f"the basisfm pyfunc model predicts from a pandas DataFrame, got {type(model_input).__name__}")
        return fill_missing_numeric(model_input, self.checkpoint_dir)


def fill_missing_numeric(frame: pd.DataFrame, checkpoint_dir: str) -> pd.DataFrame:
    """`frame` with the missing cells of each numeric column predicted from the other columns."""
    from basisfm.errors import TableError
    from basisfm.estimators.regressor import BasisRegressor

    out = frame.copy()
    for column in frame.columns:
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        missing = series.isna().to_numpy()
        if not missing.any():
            continue
        if (~missing).sum() < 2:
            raise TableError(f"has {(~missing).sum()} present values; at least 2 are needed to predict its "
                             f"{missing.sum()} missing cells in context", table="model_input", column=str(column))
        features = frame.drop(columns=[column])
        if features.shape[1] == 0:
            raise TableError("is the only column; predicting it needs at least one other column",
                             table="model_input", column=str(column))
        regressor = BasisRegressor(checkpoint=checkpoint_dir, strategy="inference", target_name=str(column),
                                   progress=False)
        regressor.fit(features[~missing], series[~missing])
        out.loc[missing, column] = regressor.predict(features[missing])
    return out
