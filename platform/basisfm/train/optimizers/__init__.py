"""The optimizers `train.optimizer` names besides torch's AdamW, one readable file each: `lamb` (layer-wise trust
ratio), `sophia` (Sophia-G, clipped diagonal-Hessian preconditioning with its Gauss-Newton-Bartlett estimate) and
`muon` (orthogonalised momentum for the blocks' matrices, AdamW for the rest). `deepspeed_config.build_optimizer`
picks one."""

from basisfm.train.optimizers.lamb import Lamb
from basisfm.train.optimizers.muon import Muon, is_hidden_matrix, orthogonalise
from basisfm.train.optimizers.sophia import SophiaG, attach_gnb_hessian, sampled_label_loss

__all__ = ["Lamb", "Muon", "SophiaG", "attach_gnb_hessian", "is_hidden_matrix", "orthogonalise", "sampled_label_loss"]
