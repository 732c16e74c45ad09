"""Ray Tune searches over loss weighting, sparsity and architecture; each trial fits a TorchTrainer."""

from basisfm.tune.search import SearchResult, run_search
from basisfm.tune.spaces import SEARCH_SPACES, check_space, search_space, trial_config
from basisfm.tune.trials_table import TrialRow

__all__ = ["SEARCH_SPACES", "SearchResult", "TrialRow", "check_space", "run_search", "search_space", "trial_config"]
