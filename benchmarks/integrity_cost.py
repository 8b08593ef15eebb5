"""Benchmark: what the run's integrity checks cost against a training step, at a study's shape.

Two checks run during training: after every step the loss and the gradient norm are checked to
be finite (one device sync, which reading the loss needed anyway; the norm comes from the
clipping the run does anyway, or is computed when clipping is off), and every checkpoint carries
a SHA-256 of its payload (computed when it is written; recomputed when it is read back). The
checksum is paid once per checkpoint, i.e. at most once per ``eval.every`` steps.

python benchmarks/integrity_cost.py [--study cot-twohop] [--preset cpu] [--steps 20]

Prints the median step time, the finite check's time per step (against the ``loss.item()`` it
replaced), the checksum's time per checkpoint and its share of a step when spread over
``eval.every`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reasonlab.experiments.study_spec import STUDIES, study_configs
from reasonlab.runs.checkpoints import pack_state
from reasonlab.runs.integrity import payload_digest
from reasonlab.tasks import build_task
from reasonlab.training.loop import build_task_model, make_optimizer, step_loss
from reasonlab.training.nonfinite import check_finite, gradient_norm
from reasonlab.training.precision import autocast_context, uses_bf16


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="cot-twohop")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    config = next(iter(study_configs(STUDIES[args.study], args.preset, 1).values()))
    data = build_task(config.task)
    torch.manual_seed(0)
    model = build_task_model(config.model, data)
    optimizer = make_optimizer(model, config.train)
    device = torch.device("cpu")
    bf16 = uses_bf16(config.train, device)
    clip = config.train.grad_clip
    step_index = [0]

    def backward() -> torch.Tensor:
        batch = data.batch(step_index[0], config.train.batch_size, 0)
        step_index[0] += 1
        with autocast_context(device, bf16):
            loss = step_loss(model, data, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def full_step() -> None:
        loss = backward()
        check_finite(loss, gradient_norm(model, clip))
        optimizer.step()

    for _ in range(3):
        full_step()
    step_ms = median_ms(full_step, args.steps)

    loss = backward()
    norm = gradient_norm(model, clip)
    item_ms = median_ms(lambda: loss.item(), 200)
    check_ms = median_ms(lambda: check_finite(loss, norm), 200)
    unclipped_norm_ms = median_ms(lambda: gradient_norm(model, 0.0), 50)
    tensors = pack_state(model, optimizer)
    megabytes = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
    digest_ms = median_ms(lambda: payload_digest(tensors, {"step": "1"}), 10)
    every = config.eval.every
    per_step_ms = (check_ms - item_ms) + digest_ms / every
    print(
        f"{args.study} --preset {args.preset}: {config.model.kind} "
        f"{config.model.n_layers} x {config.model.d_model}, batch {config.train.batch_size}, "
        f"{'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} threads"
    )
    print(f"training step (median of {args.steps}):        {step_ms:9.2f} ms")
    print(
        f"finite check per step:                  {check_ms:9.4f} ms "
        f"(loss.item() it replaces: {item_ms:.4f} ms)"
    )
    print(f"gradient norm when clipping is off:     {unclipped_norm_ms:9.4f} ms")
    print(
        f"checkpoint checksum ({megabytes:.1f} MB):        {digest_ms:9.2f} ms per checkpoint, "
        f"at most one per eval.every = {every} steps"
    )
    print(
        f"added per step:                          {per_step_ms:9.4f} ms "
        f"= {100 * per_step_ms / step_ms:.3f}% of a step "
        f"({100 * (per_step_ms + unclipped_norm_ms) / step_ms:.3f}% with clipping off)"
    )


if __name__ == "__main__":
    main()
