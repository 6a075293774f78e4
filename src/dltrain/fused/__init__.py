"""Fused sweeps: a sweep's same-structure configurations trained as one stacked model (`+launcher=fused`).

grouping.py  which jobs share a structure, and why a job cannot be fused
stack.py     the members' parameters and buffers stacked, one vmapped forward
optim.py     SGD (momentum, Nesterov), Adam, AdamW, RMSprop, Adagrad over stacked tensors, per-member values
group.py     the loop: each member an ordinary Trainer, its inner steps replaced by the stacked ones
capacity.py  how many members fit in one chunk; the CPU probe (fused against sequential steps)
The Hydra side (preparing the jobs, grouping, chunks, the ordinary path) is hydra_plugins/dltrain_fused/.
"""
