"""minialign: learn how language models are aligned to human preferences by building it.

A tiny GPT pretrained on a built-in synthetic world, then aligned: supervised fine-tuning,
a Bradley-Terry reward model, RLHF with PPO, DPO and best-of-N, each measured against the
world's known gold reward. `python -m minialign` runs the whole pipeline.
"""

import os

# OpenMP threads that spin while waiting make small tensor ops 10x slower as soon as another
# process uses a core (a browser, a second notebook). Waiting passively costs nothing when the
# machine is idle. This only takes effect if minialign is imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
