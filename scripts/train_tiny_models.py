"""Train the two tiny offline demo models on synthetic shape pictures (CPU, minutes).

Produces open_clip ``local-dir:`` folders (``open_clip_config.json`` +
``open_clip_model.safetensors``, fp16) for:

* ``demo-clip``: CLIP-style, softmax contrastive loss (open_clip ``ClipLoss``).
* ``demo-siglip``: SigLIP-style, sigmoid loss (open_clip ``SigLipLoss``) with a
  learned logit bias, so ``sigmoid(cos * exp(logit_scale) + logit_bias)`` is a
  calibrated match probability.

Both use open_clip's bundled ``SimpleTokenizer`` and are only meant for offline
demos and tests on pictures from ``image_search_service.demo.synthetic``; they know
nothing about real photos. See docs/demo-models.md.

Usage::

    python scripts/train_tiny_models.py            # writes src/image_search_service/demo_models/
    python scripts/train_tiny_models.py --out /tmp/models --steps 200
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))  # run from a checkout without installing

from image_search_service.demo.synthetic import (  # noqa: E402
    ALL_SPECS,
    COLOURS,
    SHAPES,
    ShapeSpec,
    SyntheticPicture,
    caption_for,
    jpeg_round_trip,
    render_picture,
    write_library,
)

DEFAULT_OUT = REPO_ROOT / "src" / "image_search_service" / "demo_models"
VOCAB_SIZE = 49408  # open_clip's bundled SimpleTokenizer
CONTEXT_LENGTH = 16
IMAGE_SIZE = 64

Preprocess = Callable[[Image.Image], torch.Tensor]
Tokenize = Callable[[Sequence[str]], torch.Tensor]

_VISION_CFG: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "layers": 3,
    "width": 128,
    "head_width": 32,
    "patch_size": 8,
}
# Text width 64 (not 128) because the 49408-row token table dominates the file size.
_TEXT_CFG: dict[str, Any] = {
    "context_length": CONTEXT_LENGTH,
    "vocab_size": VOCAB_SIZE,
    "width": 64,
    "heads": 4,
    "layers": 2,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    sigmoid_loss: bool


MODEL_SPECS: dict[str, ModelSpec] = {
    "demo-clip": ModelSpec(
        name="demo-clip",
        model_cfg={
            "embed_dim": 512,
            "vision_cfg": dict(_VISION_CFG),
            "text_cfg": dict(_TEXT_CFG),
        },
        preprocess_cfg={
            "size": IMAGE_SIZE,
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
        sigmoid_loss=False,
    ),
    "demo-siglip": ModelSpec(
        name="demo-siglip",
        model_cfg={
            "embed_dim": 768,
            "custom_text": True,
            # SigLIP paper initialisation: t' = log 10, b = -10.
            "init_logit_scale": math.log(10.0),
            "init_logit_bias": -10,
            "vision_cfg": dict(_VISION_CFG),
            "text_cfg": dict(_TEXT_CFG),
        },
        preprocess_cfg={
            "size": IMAGE_SIZE,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "resize_mode": "squash",
        },
        sigmoid_loss=True,
    ),
}

_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("{caption}", 0.4),
    ("{bare}", 0.2),
    ("a photo of {caption}", 0.2),
    ("a picture of {caption}", 0.1),
    ("{naive}", 0.1),  # "a orange circle": people type the article loosely
)


def describe(shapes: Sequence[ShapeSpec], rng: random.Random) -> str:
    """A training text for the shapes: the caption or a label-only variant."""
    shapes = list(shapes)
    rng.shuffle(shapes)  # word order must not matter
    template = rng.choices([t for t, _ in _TEMPLATES], weights=[w for _, w in _TEMPLATES])[0]
    return template.format(
        caption=caption_for(shapes),
        bare=" and ".join(s.label for s in shapes),
        naive=" and ".join(f"a {s.label}" for s in shapes),
    )


def all_training_texts() -> list[str]:
    """Every word the training texts can use (drives the compact vocabulary)."""
    texts = [" ".join(COLOURS), " ".join(SHAPES), "a an and a photo of a picture of"]
    texts += [caption_for([spec]) for spec in ALL_SPECS]
    return texts


def draw_batch(rng: random.Random, pair_probability: float) -> list[list[ShapeSpec]]:
    """Groups of shapes for one batch, each label used at most once.

    Contrastive losses treat every other text in the batch as a negative, so a
    repeated label (or a single-shape picture whose label also sits in a
    two-shape picture) would be a false negative; a permutation avoids both.
    """
    labels = list(ALL_SPECS)
    rng.shuffle(labels)
    groups: list[list[ShapeSpec]] = []
    while labels:
        take = 2 if len(labels) >= 2 and rng.random() < pair_probability else 1
        groups.append(labels[:take])
        labels = labels[take:]
    return groups


@dataclass
class TrainConfig:
    steps: int
    seed: int
    lr: float = 1e-3
    warmup: int = 60
    weight_decay: float = 0.05
    scalar_lr_scale: float = 10.0
    pair_probability: float = 0.35
    partial_caption_probability: float = 0.3
    size_range: tuple[int, int] = (96, 384)
    jpeg_probability: float = 0.9
    jpeg_quality_range: tuple[int, int] = (40, 95)
    eval_every: int = 0


class CompactVocab:
    """Maps SimpleTokenizer ids onto the few ids the training texts use.

    Training a 49408-row embedding where ~40 rows ever get a gradient would spend
    most optimiser time on untouched rows; the compact table is scattered back
    into the full table (unused rows zero) when the model is saved. Order is
    kept, so the end-of-text token stays the largest id (argmax pooling).
    """

    def __init__(self, tokenizer: Tokenize, texts: Sequence[str]) -> None:
        ids = torch.unique(tokenizer(list(texts)))
        self.full_ids = torch.unique(torch.cat([ids, torch.tensor([0])]))  # sorted
        self.lookup = torch.full((VOCAB_SIZE,), -1, dtype=torch.long)
        self.lookup[self.full_ids] = torch.arange(len(self.full_ids))
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.full_ids)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        compact = self.lookup[self.tokenizer(list(texts))]
        if bool((compact < 0).any()):
            raise ValueError(f"training text outside the compact vocabulary: {texts}")
        return compact


def build_model(model_cfg: dict[str, Any]) -> torch.nn.Module:
    cfg = copy.deepcopy(model_cfg)
    model_class = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    model: torch.nn.Module = model_class(**cfg)
    return model


def make_preprocess(preprocess_cfg: dict[str, Any]) -> Preprocess:
    transform: Preprocess = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    return transform


def make_tokenizer() -> Tokenize:
    tokenizer: Tokenize = open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    return tokenizer


def parameter_groups(
    model: torch.nn.Module, config: TrainConfig
) -> list[dict[str, Any]]:
    decay, no_decay, scalars = [], [], []
    for name, param in model.named_parameters():
        if name in ("logit_scale", "logit_bias"):
            scalars.append(param)
        elif param.ndim < 2 or "ln" in name or "bias" in name or "embedding" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": config.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        # The temperature and bias have to travel far from their initial values
        # within a few hundred steps.
        {"params": scalars, "weight_decay": 0.0, "lr_scale": config.scalar_lr_scale},
    ]


def make_batch(
    rng: random.Random, config: TrainConfig, preprocess: Preprocess
) -> tuple[torch.Tensor, list[str]]:
    images, texts = [], []
    for group in draw_batch(rng, config.pair_probability):
        size = (rng.randint(*config.size_range), rng.randint(*config.size_range))
        picture = render_picture(group, rng=rng, size=size)
        image = picture.image
        if rng.random() < config.jpeg_probability:
            image = jpeg_round_trip(image, rng.randint(*config.jpeg_quality_range))
        images.append(preprocess(image))
        if len(group) == 2 and rng.random() < config.partial_caption_probability:
            # A two-shape picture also matches a query naming one of its shapes.
            texts.append(describe([rng.choice(group)], rng))
        else:
            texts.append(describe(group, rng))
    return torch.stack(images), texts


def encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = model.encode_text(tokens, normalize=True)
    return features


def encode_image(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = model.encode_image(pixels, normalize=True)
    return features


def train(spec: ModelSpec, config: TrainConfig, held_out: list[tuple[Path, SyntheticPicture]]) -> tuple[
    torch.nn.Module, CompactVocab, float
]:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    vocab = CompactVocab(make_tokenizer(), all_training_texts())
    train_cfg = copy.deepcopy(spec.model_cfg)
    train_cfg["text_cfg"]["vocab_size"] = len(vocab)
    model = build_model(train_cfg)
    preprocess = make_preprocess(spec.preprocess_cfg)
    groups = parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn: torch.nn.Module = SigLipLoss() if spec.sigmoid_loss else ClipLoss()

    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        if step < config.warmup:
            lr = config.lr * (step + 1) / config.warmup
        else:
            progress = (step - config.warmup) / max(1, config.steps - config.warmup)
            lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]

        pixels, texts = make_batch(rng, config, preprocess)
        image_features = encode_image(model, pixels)
        text_features = encode_text(model, vocab(texts))
        scale = model.logit_scale.exp()
        if spec.sigmoid_loss:
            loss = loss_fn(image_features, text_features, scale, model.logit_bias)
        else:
            loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))

        if (step + 1) % 50 == 0 or step == 0:
            extra = f" bias {model.logit_bias.item():.2f}" if spec.sigmoid_loss else ""
            print(
                f"  [{spec.name}] step {step + 1:4d}/{config.steps} loss {loss.item():.3f} "
                f"scale {scale.item():.1f}{extra} lr {lr:.2e} "
                f"{time.perf_counter() - start:.0f}s",
                flush=True,
            )
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            model.eval()
            result = evaluate(model, preprocess, vocab, held_out, spec.sigmoid_loss)
            print(f"  [{spec.name}] {result.summary()}", flush=True)
            model.train()
    elapsed = time.perf_counter() - start
    model.eval()
    return model, vocab, elapsed


def export(
    spec: ModelSpec, model: torch.nn.Module, vocab: CompactVocab, out_dir: Path, seed: int, steps: int
) -> Path:
    """Write the open_clip ``local-dir:`` layout with fp16 weights."""
    state = model.state_dict()
    key = "text.token_embedding.weight" if "text.token_embedding.weight" in state else (
        "token_embedding.weight"
    )
    compact = state[key]
    full = torch.zeros((VOCAB_SIZE, compact.shape[1]), dtype=compact.dtype)
    full[vocab.full_ids] = compact
    state[key] = full
    tensors = {name: value.detach().to(torch.float16).contiguous() for name, value in state.items()}

    target = out_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": spec.model_cfg, "preprocess_cfg": spec.preprocess_cfg}
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        tensors,
        str(target / "open_clip_model.safetensors"),
        metadata={"model": spec.name, "seed": str(seed), "steps": str(steps)},
    )
    return target


@dataclass
class QueryResult:
    query: str
    relevant: int
    precision_at_5: float
    r_precision: float


@dataclass
class EvalResult:
    queries: list[QueryResult]
    zero_shot_accuracy: float
    calibrated: dict[str, float] = field(default_factory=dict)

    @property
    def mean_p5(self) -> float:
        return sum(q.precision_at_5 for q in self.queries) / len(self.queries)

    @property
    def mean_r_precision(self) -> float:
        return sum(q.r_precision for q in self.queries) / len(self.queries)

    @property
    def min_r_precision(self) -> float:
        return min(q.r_precision for q in self.queries)

    def summary(self) -> str:
        text = (
            f"P@5 mean {self.mean_p5:.3f} min {min(q.precision_at_5 for q in self.queries):.2f} | "
            f"R-precision mean {self.mean_r_precision:.3f} min {self.min_r_precision:.2f} | "
            f"zero-shot top-1 {self.zero_shot_accuracy:.3f}"
        )
        if self.calibrated:
            text += " | " + " ".join(f"{k} {v:.3f}" for k, v in self.calibrated.items())
        return text


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    preprocess: Preprocess,
    tokenize: Tokenize,
    pictures: list[tuple[Path, SyntheticPicture]],
    sigmoid: bool,
) -> EvalResult:
    """Text->image retrieval over JPEG files, loaded as the service loads them."""
    features = []
    for start in range(0, len(pictures), 64):
        batch = []
        for path, _ in pictures[start : start + 64]:
            with Image.open(path) as image:
                batch.append(preprocess(image.convert("RGB")))
        features.append(encode_image(model, torch.stack(batch)))
    image_features = torch.cat(features)

    queries = [caption_for([spec]) for spec in ALL_SPECS]
    text_features = encode_text(model, tokenize(queries))
    similarity = text_features @ image_features.T  # [queries, pictures]
    relevant = torch.tensor(
        [[spec.label in picture.labels for _, picture in pictures] for spec in ALL_SPECS]
    )

    results = []
    for row, query in enumerate(queries):
        count = int(relevant[row].sum())
        if count == 0:
            continue
        order = similarity[row].argsort(descending=True)
        hits = relevant[row][order]
        k = min(5, count)
        results.append(
            QueryResult(
                query=query,
                relevant=count,
                precision_at_5=float(hits[:k].float().mean()),
                r_precision=float(hits[:count].float().mean()),
            )
        )

    single = [i for i, (_, picture) in enumerate(pictures) if len(picture.shapes) == 1]
    predicted = similarity[:, single].argmax(dim=0)
    truth = torch.tensor([ALL_SPECS.index(pictures[i][1].shapes[0]) for i in single])
    accuracy = float((predicted == truth).float().mean())

    calibrated: dict[str, float] = {}
    if sigmoid:
        scale, bias = model.logit_scale.exp(), model.logit_bias
        probability = torch.sigmoid(similarity * scale + bias)
        own = encode_text(model, tokenize([picture.caption for _, picture in pictures]))
        own_probability = torch.sigmoid((own * image_features).sum(dim=-1) * scale + bias)
        calibrated = {
            "own-caption": float(own_probability.mean()),
            "own-caption>0.5": float((own_probability > 0.5).float().mean()),
            "label-match": float(probability[relevant].mean()),
            "label-match>0.5": float((probability[relevant] > 0.5).float().mean()),
            "non-match": float(probability[~relevant].mean()),
            "non-match<0.1": float((probability[~relevant] < 0.1).float().mean()),
        }
    return EvalResult(queries=results, zero_shot_accuracy=accuracy, calibrated=calibrated)


def check_and_load(spec: ModelSpec, target: Path) -> tuple[torch.nn.Module, Preprocess, Tokenize]:
    """Load the written folder the way the service does and check it round-trips."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{target.resolve()}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{target.resolve()}")
    if not isinstance(tokenizer, open_clip.SimpleTokenizer):
        raise RuntimeError(f"{spec.name}: expected SimpleTokenizer, got {type(tokenizer)}")
    if tokenizer.context_length != CONTEXT_LENGTH:
        raise RuntimeError(f"{spec.name}: context length {tokenizer.context_length}")
    loaded_cfg = model.visual.preprocess_cfg
    for key, value in spec.preprocess_cfg.items():
        loaded = loaded_cfg[key]
        if key == "size":
            # open_clip reports the model's image_size, an (h, w) pair.
            value = [value, value]
        if (list(loaded) if isinstance(loaded, tuple | list) else loaded) != value:
            raise RuntimeError(f"{spec.name}: preprocess {key} is {loaded!r}, config {value!r}")
    if repr(preprocess) != repr(make_preprocess(spec.preprocess_cfg)):
        raise RuntimeError(f"{spec.name}: open_clip built a different preprocess:\n{preprocess}")
    expected_class = open_clip.CustomTextCLIP if spec.model_cfg.get("custom_text") else open_clip.CLIP
    if type(model) is not expected_class:
        raise RuntimeError(f"{spec.name}: loaded {type(model).__name__}")
    model.eval()
    loaded_model: torch.nn.Module = model
    return loaded_model, preprocess, tokenizer


def print_report(spec: ModelSpec, result: EvalResult, held_out: int) -> None:
    print(f"\n=== {spec.name}: text->image over {held_out} held-out JPEG pictures ===")
    print(f"{'query':<26} {'relevant':>8} {'P@5':>6} {'R-prec':>7}")
    for q in result.queries:
        print(f"{q.query:<26} {q.relevant:>8d} {q.precision_at_5:>6.2f} {q.r_precision:>7.2f}")
    print(result.summary())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODEL_SPECS), default=list(MODEL_SPECS)
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-count", type=int, default=400, help="held-out pictures")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between evaluations")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    failures = []
    with tempfile.TemporaryDirectory(prefix="tiny-models-eval-") as tmp:
        # Held out: independent seed, other picture sizes and JPEG qualities.
        held_out = write_library(
            Path(tmp),
            args.eval_count,
            seed=args.seed + 1_000_003,
            jpeg_quality_range=(55, 90),
            size_range=(140, 360),
        )
        for name in args.models:
            spec = MODEL_SPECS[name]
            config = TrainConfig(steps=args.steps, seed=args.seed, lr=args.lr, eval_every=args.eval_every)
            print(f"training {name} ({config.steps} steps, seed {config.seed})", flush=True)
            model, vocab, elapsed = train(spec, config, held_out)
            target = export(spec, model, vocab, args.out, args.seed, args.steps)
            loaded, preprocess, tokenizer = check_and_load(spec, target)
            result = evaluate(loaded, preprocess, tokenizer, held_out, spec.sigmoid_loss)
            print_report(spec, result, len(held_out))
            size_mb = (target / "open_clip_model.safetensors").stat().st_size / 1e6
            print(f"training time {elapsed:.0f}s; weights {size_mb:.1f} MB at {target}")
            if result.min_r_precision < 0.8:
                failures.append(f"{name}: R-precision below 0.8 for some query")
    for failure in failures:
        print(f"WARNING {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
