"""In-context regression (Garg et al. 2022, arXiv 2208.01066): learn a function from the prompt.

A prompt holds n pairs (x_i, f(x_i)), x_i ~ N(0, I_d), with f drawn afresh for every prompt from a
function class. The model reads the pairs as 2n vectors of width d + 1, interleaved,

    [x_1, 0], [0, f(x_1)], [x_2, 0], [0, f(x_2)], ..., [x_n, 0], [0, f(x_n)],

and at the position of each x_i predicts f(x_i) from everything before it: after i - 1 in-context
examples. The loss is the squared error at those n positions; training prompts are drawn fresh
at every step from a generator seeded by (task seed, train seed, step), so a resumed run sees the
prompts it would have seen. A curriculum (``task.curriculum_every``) starts with fewer active
dimensions (the rest of x is zero) and fewer points, and grows both in stages.

Function classes, and E[f(x)^2] (the squared error of predicting 0), by which errors are divided:

- ``linear``: f(x) = w . x, w ~ N(0, I_d); d (Garg et al. normalize by d);
- ``sparse_linear``: w with ``sparsity`` nonzero N(0, 1) entries at random coordinates; sparsity;
- ``noisy_linear``: w . x + noise_std * N(0, 1); d + noise_std^2;
- ``relu2nn``: sum_j a_j relu(v_j . x), v_j ~ N(0, I_d), a_j ~ N(0, 2 / hidden); d;
- ``decision_tree``: a full binary tree of depth ``depth`` whose nodes test x_c > 0 on a random
  coordinate c, with N(0, 1) leaf values; 1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from reasonlab.config import ICLTaskConfig
from reasonlab.tasks.base import Batch, Metric, ModelIO, RegressionProbe, Task

SQUARED_ERROR = Metric("squared error / E[f(x)²]", higher_is_better=False)


def _generator(*parts: int | str) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _active(batch: int, width: int, dim: int) -> Tensor:
    """(batch, width) mask of the first ``dim`` coordinates."""
    return (torch.arange(width) < dim).expand(batch, width)


def draw_functions(
    cfg: ICLTaskConfig, batch: int, dim: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """The parameters of ``batch`` functions of the class, over the first ``dim`` coordinates."""
    width, kind = cfg.dim, cfg.function_class
    if kind in ("linear", "noisy_linear", "sparse_linear"):
        w = torch.randn(batch, width, generator=generator) * _active(batch, width, dim)
        if kind == "sparse_linear":
            keys = torch.rand(batch, dim, generator=generator)
            chosen = keys.argsort(1)[:, : min(cfg.sparsity, dim)]
            w = w * torch.zeros(batch, width, dtype=torch.bool).scatter_(1, chosen, True)
        return {"w": w}
    if kind == "relu2nn":
        v = torch.randn(batch, cfg.hidden, width, generator=generator)
        a = torch.randn(batch, cfg.hidden, generator=generator) * (2.0 / cfg.hidden) ** 0.5
        return {"v": v * _active(batch, width, dim)[:, None], "a": a}
    internal = 2**cfg.depth - 1  # decision_tree: node i's children are 2i + 1 and 2i + 2
    coordinates = torch.randint(0, dim, (batch, internal), generator=generator)
    return {
        "coordinates": coordinates,
        "leaves": torch.randn(batch, internal + 1, generator=generator),
    }


def apply_functions(cfg: ICLTaskConfig, functions: dict[str, Tensor], xs: Tensor) -> Tensor:
    """f(x) for each prompt's function: xs (batch, points, d) -> (batch, points), no noise."""
    kind = cfg.function_class
    if kind in ("linear", "noisy_linear", "sparse_linear"):
        return torch.einsum("bpd,bd->bp", xs, functions["w"])
    if kind == "relu2nn":
        hidden = torch.relu(torch.einsum("bpd,bhd->bph", xs, functions["v"]))
        return torch.einsum("bph,bh->bp", hidden, functions["a"])
    coordinates, leaves = functions["coordinates"], functions["leaves"]
    node = torch.zeros(xs.shape[:2], dtype=torch.long)
    rows = torch.arange(xs.shape[0])[:, None]
    for _ in range(cfg.depth):
        right = xs.gather(2, coordinates[rows, node][..., None])[..., 0] > 0
        node = 2 * node + 1 + right.long()
    return leaves[rows, node - coordinates.shape[1]]


def sample_prompts(
    cfg: ICLTaskConfig, batch: int, dim: int, points: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """xs (batch, points, cfg.dim) with coordinates from ``dim`` on zero, and ys (batch, points):
    one function of the class per prompt."""
    xs = torch.randn(batch, points, cfg.dim, generator=generator)
    xs = xs * _active(batch, cfg.dim, dim)[:, None]
    ys = apply_functions(cfg, draw_functions(cfg, batch, dim, generator), xs)
    if cfg.function_class == "noisy_linear":
        ys = ys + cfg.noise_std * torch.randn(batch, points, generator=generator)
    return xs, ys


def encode(xs: Tensor, ys: Tensor) -> Tensor:
    """(batch, points, d), (batch, points) -> (batch, 2 points, d + 1): [x_i, 0] then [0, y_i]."""
    batch, points, width = xs.shape
    prompts = xs.new_zeros(batch, points, 2, width + 1)
    prompts[:, :, 0, :width] = xs
    prompts[:, :, 1, width] = ys
    return prompts.reshape(batch, 2 * points, width + 1)


def normalizer(cfg: ICLTaskConfig, dim: int) -> float:
    """E[f(x)^2] of the class at ``dim`` active dimensions: the error of predicting 0."""
    return {
        "linear": float(dim),
        "sparse_linear": float(min(cfg.sparsity, dim)),
        "noisy_linear": dim + cfg.noise_std**2,
        "relu2nn": float(dim),
        "decision_tree": 1.0,
    }[cfg.function_class]


def report_points(cfg: ICLTaskConfig) -> list[int]:
    """Numbers of in-context examples whose error is logged on its own: d / 2, d, 2d, the last."""
    wanted = {cfg.dim // 2, cfg.dim, 2 * cfg.dim, cfg.n_points - 1}
    return sorted(k for k in wanted if 0 <= k < cfg.n_points)


class ICLTask(Task):
    """In-context regression as a vector task (see the module docstring)."""

    metric = SQUARED_ERROR

    def __init__(self, cfg: ICLTaskConfig):
        self.cfg = cfg
        xs, ys = sample_prompts(
            cfg, cfg.num_test, cfg.dim, cfg.n_points, _generator("icl-test", cfg.seed)
        )
        self.probes = {
            "test": RegressionProbe(
                inputs=encode(xs, ys),
                targets=ys[..., None],
                positions=torch.arange(0, 2 * cfg.n_points, 2),
                normalizer=normalizer(cfg, cfg.dim),
                report_at=report_points(cfg),
            )
        }
        self.stats = {
            "function_class": cfg.function_class,
            "dim": cfg.dim,
            "n_points": cfg.n_points,
            "test_prompts": cfg.num_test,
            "normalizer": normalizer(cfg, cfg.dim),
        }
        self.notes = [
            f"icl {cfg.function_class}: fresh prompts every step; errors divided by "
            f"E[f(x)^2] = {normalizer(cfg, cfg.dim):g}, the error of predicting 0"
        ]
        self.resolved = {}
        self.vocab = None

    def io(self) -> ModelIO:
        return ModelIO(2 * self.cfg.n_points, input_dim=self.cfg.dim + 1, output_dim=1)

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        dim, points = self.cfg.stage(step)
        generator = _generator("icl-train", self.cfg.seed, seed, step)
        xs, ys = sample_prompts(self.cfg, batch_size, dim, points, generator)
        mask = torch.zeros(batch_size, 2 * points, dtype=torch.bool)
        mask[:, 0::2] = True
        return Batch(encode(xs, ys), ys, mask, units=batch_size * points)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean squared error of the predictions at the x positions."""
        predictions = outputs[..., 0][batch.mask].float()
        return (predictions - batch.targets.reshape(-1).float()).pow(2).mean()

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        probe = self.probes["test"]
        first = self.batch(0, 4, 0)
        for tensor in (probe.inputs, probe.targets, first.inputs):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def headline_probes(self) -> list[str]:
        return ["test"]

    def example_inputs(self, n: int) -> Tensor:
        return self.probes["test"].inputs[:n]


def build_icl(cfg: ICLTaskConfig) -> ICLTask:
    return ICLTask(cfg)


def write_icl_dataset(cfg: ICLTaskConfig, out: Path) -> dict[str, int]:
    """Writes test.jsonl into ``out``: one test prompt per line, {"x": n lists of d numbers,
    "y": n numbers}. Training prompts are drawn fresh at every step, so there is no train file;
    returns line counts."""
    from reasonlab.core.files import atomic_path, make_dir

    make_dir(out)
    probe = ICLTask(cfg).probes["test"]
    width = cfg.dim
    xs, ys = probe.inputs[:, 0::2, :width], probe.inputs[:, 1::2, width]
    lines = [json.dumps({"x": x, "y": y}) for x, y in zip(xs.tolist(), ys.tolist(), strict=True)]
    with atomic_path(Path(out) / "test.jsonl") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return {"train": 0, "test": len(lines)}
