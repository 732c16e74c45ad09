"""What `save` writes and `load` reads: the file names of a saved estimator and the estimator.json formats.

Apart from `base.py` (which writes them) and `validation.py` (which checks what is read back), so neither
imports the other for them.
"""

FORMAT_VERSION = 3  # 3: the preprocessor lists its "targets" (format 2 saved one "target"; still read)
READABLE_FORMATS = (2, 3)
ESTIMATOR_FILE = "estimator.json"
CONTEXT_FILE = "context.parquet"  # an in-context model's training rows, which it reads at predict
MODEL_DIR = "model"  # member 0; member k > 0 is saved under f"{MODEL_DIR}-{k}"
IMPUTER_WEIGHTS_FILE = "imputer.safetensors"  # a diffusion imputer's weights (`missing_imputation="diffusion"`)
