"""Data parallelism (minialign/dist.py): two gloo processes at the same global batch give the
same loss and gradients as one process; in one process every helper is the identity."""

import torch
import torch.multiprocessing as mp

from minialign import dist
from minialign.model import GPT, GPTConfig
from minialign.ppo import whiten, whiten_across_ranks
from minialign.sft import IGNORE, sft_loss

TINY = GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16)


def make_batch():
    """6 chats of different lengths: (ids (6, 12), labels (6, 12)), -100 on prompt and padding,
    so that the two ranks' shares hold different numbers of scored tokens."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 32, (6, 12), generator=g)
    labels = ids.clone()
    for i, (prompt, length) in enumerate([(2, 12), (5, 7), (3, 12), (1, 4), (6, 10), (2, 9)]):
        labels[i, :prompt] = IGNORE
        labels[i, length:] = IGNORE
    return ids, labels


def run_step(model, rows, micro_batch_size=0):
    """One SFT-style step's forward and backward through `dist.forward_backward`."""
    ids, labels = make_batch()

    def loss_fn(chunk):
        logits, _ = model(ids[chunk])
        return sft_loss(logits, labels[chunk]), {"first_logit": logits[0, 0, 0].item()}

    def count(chunk):
        return int((labels[chunk][:, 1:] != IGNORE).sum())

    return dist.forward_backward(model, rows, loss_fn, count, micro_batch_size)


def reference():
    """One process, whole batch, plain `loss.backward()`: the loss and every gradient."""
    torch.manual_seed(0)
    model = GPT(TINY)
    ids, labels = make_batch()
    logits, _ = model(ids)
    loss = sft_loss(logits, labels)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def _worker(rank, world, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    try:
        results = {}
        for micro in (0, 1):  # one micro-batch per rank; then one row per micro-batch (no_sync)
            torch.manual_seed(0)
            model = GPT(TINY)
            out = run_step(dist.wrap(model), dist.shard(torch.arange(6)), micro)
            results[micro] = {"loss": out["loss"], "grads": [p.grad for p in model.parameters()]}
        # PPO's whitening over every rank's rows equals whitening the whole batch
        x = torch.arange(24.0).view(6, 4) ** 1.5
        mask = torch.ones(6, 4)
        mask[1, 2:] = 0
        mask[4, 1:] = 0
        mine = whiten_across_ranks(dist.shard(x), dist.shard(mask))
        if rank == 0:
            torch.save({"results": results, "world_size": dist.world_size(), "whitened": mine,
                        "expected_whitened": dist.shard(whiten(x, mask))}, out_file)
    finally:
        dist.close()


def test_two_gloo_processes_match_one_process(tmp_path):
    ref_loss, ref_grads = reference()
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    got = torch.load(out_file)
    assert got["world_size"] == 2
    for micro, result in got["results"].items():
        assert abs(result["loss"] - ref_loss) < 1e-5, (micro, result["loss"], ref_loss)
        for g, r in zip(result["grads"], ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["whitened"], got["expected_whitened"])


def test_single_process_is_bit_for_bit_plain_backward():
    ref_loss, ref_grads = reference()
    torch.manual_seed(0)
    model = GPT(TINY)
    assert dist.wrap(model) is model and dist.world_size() == 1 and dist.is_main()
    out = run_step(model, torch.arange(6))
    assert out["loss"] == ref_loss  # exactly: no rescaling in one process
    for p, r in zip(model.parameters(), ref_grads):
        assert torch.equal(p.grad, r)


def test_micro_batches_in_one_process_accumulate_the_same_gradient():
    ref_loss, ref_grads = reference()
    torch.manual_seed(0)
    model = GPT(TINY)
    out = run_step(model, torch.arange(6), micro_batch_size=4)  # 4 + 2 rows, token-weighted
    assert abs(out["loss"] - ref_loss) < 1e-6
    for p, r in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-7)


def test_helpers_are_identities_in_one_process():
    assert dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.all_reduce_sum(2.5) == 2.5 and dist.all_reduce_mean(2.5) == 2.5
    assert dist.loss_share(7, 7) is None  # nothing to rescale
    assert dist.loss_share(3, 12) == 0.25  # a micro-batch's share
    assert [last for _, last in dist.micro_batches(list(range(5)), 2)] == [False, False, True]
    assert dist.micro_batches([1, 2, 3]) == [([1, 2, 3], True)]
