"""Train the two tiny offline demo models on synthetic shape pictures (CPU, minutes).

Produces open_clip ``local-dir:`` folders (``open_clip_config.json`` +
``open_clip_model.safetensors``, fp16) for:

* ``demo-clip``: CLIP-style, softmax contrastive loss (open_clip ``ClipLoss``).
* ``demo-siglip``: SigLIP-style, sigmoid loss (open_clip ``SigLipLoss``) with a
  learned logit bias, so ``sigmoid(cos * exp(logit_scale) + logit_bias)`` is a
  calibrated match probability.

demo-clip is trained from scratch; demo-siglip starts from demo-clip's towers
(its projections, logit scale and bias start fresh) and is trained on with the
sigmoid loss, which takes far fewer steps than learning shapes a second time.

Both use open_clip's bundled ``SimpleTokenizer`` and are only meant for offline
demos and tests on pictures from ``image_search_service.demo.synthetic``; they know
nothing about real photos. See docs/demo-models.md.

Usage::

    python scripts/train_tiny_models.py            # writes src/image_search_service/demo_models/
    python scripts/train_tiny_models.py --out /tmp/models --steps 300 --eval-count 100
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
from open_clip.loss import ClipLoss, SigLipLoss
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import load_file, save_file

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

# open_clip ships no type hints; its CLIP / CustomTextCLIP modules are used duck-typed.
ClipModel = Any
Preprocess = Callable[[Image.Image], torch.Tensor]
Tokenize = Callable[[Sequence[str]], torch.Tensor]

# A small CLIP ModifiedResNet (layers given as a list), not a ViT: trained from
# scratch on a few tens of thousands of pictures, a ViT of similar cost had not
# learnt shapes at all when this one had (see docs/demo-models.md).
_VISION_CFG: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "layers": [1, 1, 1, 1],
    "width": 16,
    "head_width": 32,
}
# Text width 64 (not 128): the 49408-row token table dominates the file size.
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


def _swapped_partner(
    first: ShapeSpec, remaining: list[ShapeSpec], rng: random.Random
) -> ShapeSpec | None:
    """A label whose colour and shape both differ from ``first`` and whose swapped
    combinations are still unused, or ``None``."""
    candidates = [
        other
        for other in remaining
        if other.colour != first.colour
        and other.shape != first.shape
        and ShapeSpec(first.colour, other.shape) in remaining
        and ShapeSpec(other.colour, first.shape) in remaining
    ]
    return rng.choice(candidates) if candidates else None


def draw_batch(
    rng: random.Random, pair_probability: float, swap_probability: float = 0.0
) -> list[list[ShapeSpec]]:
    """Groups of shapes for one batch, each label used at most once.

    Contrastive losses treat every other text in the batch as a negative, so a
    repeated label (or a single-shape picture whose label also sits in a
    two-shape picture) would be a false negative; a permutation avoids both.

    With ``swap_probability`` a two-shape picture comes with its swapped twin
    ("a blue square and an orange circle" next to "a blue circle and an orange
    square"): only binding each colour to its shape tells those apart, which is
    what small models otherwise fail to learn.
    """
    remaining = list(ALL_SPECS)
    rng.shuffle(remaining)
    groups: list[list[ShapeSpec]] = []
    while remaining:
        first = remaining.pop(0)
        if not remaining or rng.random() >= pair_probability:
            groups.append([first])
            continue
        partner = (
            _swapped_partner(first, remaining, rng) if rng.random() < swap_probability else None
        )
        if partner is None:
            groups.append([first, remaining.pop(0)])
            continue
        twin = [ShapeSpec(first.colour, partner.shape), ShapeSpec(partner.colour, first.shape)]
        for spec in (partner, *twin):
            remaining.remove(spec)
        groups += [[first, partner], twin]
    return groups


@dataclass
class TrainConfig:
    steps: int
    seed: int
    lr: float = 1e-3
    warmup: int = 60
    weight_decay: float = 0.05
    scalar_lr_scale: float = 10.0
    # Pairs and swapped twins are where retrieval errs (colour bound to the wrong
    # shape), so after the singles-only start about half the pictures are pairs.
    pair_probability: float = 0.45
    # Shape is learnt much faster on single large shapes; pairs come in later.
    singles_only_fraction: float = 0.25
    swap_probability: float = 1.0
    # A pair captioned with one of its shapes teaches that "a red circle" matches it.
    partial_caption_probability: float = 0.5
    # Smaller than the pictures in a library (cheaper to draw); the model sees 64 px.
    size_range: tuple[int, int] = (64, 256)
    jpeg_probability: float = 0.9
    jpeg_quality_range: tuple[int, int] = (40, 95)
    eval_every: int = 0


class CompactVocab:
    """Maps SimpleTokenizer ids onto the few ids the training texts use.

    Training a 49408-row embedding where 22 rows ever get a gradient would spend
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


def build_model(model_cfg: dict[str, Any]) -> ClipModel:
    cfg = copy.deepcopy(model_cfg)
    model_class = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    model: ClipModel = model_class(**cfg)
    return model


def make_preprocess(preprocess_cfg: dict[str, Any]) -> Preprocess:
    transform: Preprocess = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    return transform


def make_tokenizer() -> Tokenize:
    tokenizer: Tokenize = open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    return tokenizer


def parameter_groups(model: ClipModel, config: TrainConfig) -> list[dict[str, Any]]:
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
    rng: random.Random, config: TrainConfig, preprocess: Preprocess, pair_probability: float
) -> tuple[torch.Tensor, list[str]]:
    images, texts = [], []
    for group in draw_batch(rng, pair_probability, config.swap_probability):
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


def encode_text(model: ClipModel, tokens: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = model.encode_text(tokens, normalize=True)
    return features


def encode_image(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = model.encode_image(pixels, normalize=True)
    return features


def warm_start(model: ClipModel, clip_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a trained CLIP-style model's towers into ``model`` where shapes agree.

    CLIP keeps its text tower at the top level, CustomTextCLIP under ``text.``;
    projections to a different embedding width and the logit scale/bias stay as
    initialised. Returns the names of the tensors left as initialised.
    """
    own = model.state_dict()
    copied = set()
    for name, value in clip_state.items():
        if name in ("logit_scale", "logit_bias"):
            continue
        target = name if name.startswith("visual.") or name in own else f"text.{name}"
        if target in own and own[target].shape == value.shape:
            own[target] = value.detach().clone().to(own[target].dtype)
            copied.add(target)
    model.load_state_dict(own)
    return [name for name in own if name not in copied]


def compact_state_from_file(path: Path, vocab: CompactVocab) -> dict[str, torch.Tensor]:
    """An exported model's weights (fp32), token table cut down to the compact vocabulary."""
    state = {name: value.float() for name, value in load_file(str(path)).items()}
    for name in ("token_embedding.weight", "text.token_embedding.weight"):
        if name in state:
            state[name] = state[name][vocab.full_ids]
    return state


def train(
    spec: ModelSpec,
    config: TrainConfig,
    held_out: list[tuple[Path, SyntheticPicture]],
    init_state: dict[str, torch.Tensor] | None = None,
) -> tuple[ClipModel, CompactVocab, float]:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    vocab = CompactVocab(make_tokenizer(), all_training_texts())
    train_cfg = copy.deepcopy(spec.model_cfg)
    train_cfg["text_cfg"]["vocab_size"] = len(vocab)
    model = build_model(train_cfg)
    if init_state is not None:
        fresh = warm_start(model, init_state)
        print(f"  [{spec.name}] warm start; left as initialised: {', '.join(fresh)}")
    # channels_last: about 30% faster convolutions on CPU; export makes tensors plain again.
    model = model.to(memory_format=torch.channels_last)
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

        singles_only = step < config.singles_only_fraction * config.steps
        pair_probability = 0.0 if singles_only else config.pair_probability
        pixels, texts = make_batch(rng, config, preprocess, pair_probability)
        image_features = encode_image(model, pixels.contiguous(memory_format=torch.channels_last))
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
    spec: ModelSpec,
    model: ClipModel,
    vocab: CompactVocab,
    out_dir: Path,
    seed: int,
    steps: int,
) -> Path:
    """Write the open_clip ``local-dir:`` layout with fp16 weights."""
    state = model.state_dict()
    key = (
        "text.token_embedding.weight"
        if "text.token_embedding.weight" in state
        else ("token_embedding.weight")
    )
    compact = state[key]
    full = torch.zeros((VOCAB_SIZE, compact.shape[1]), dtype=compact.dtype)
    full[vocab.full_ids] = compact
    state[key] = full
    # fp16 halves the files; integer buffers (BatchNorm's batch counters) stay integers.
    tensors = {
        name: (value.to(torch.float16) if value.is_floating_point() else value)
        .detach()
        .contiguous()
        for name, value in state.items()
    }

    target = out_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": spec.model_cfg, "preprocess_cfg": spec.preprocess_cfg}
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        tensors,
        str(target / "open_clip_model.safetensors"),
        metadata={"model": spec.name, "seed": str(seed), "steps": str(steps)},
    )
    (target / "open_clip_model.safetensors").chmod(0o644)  # safetensors writes 0600
    return target


@dataclass
class QueryResult:
    query: str
    relevant: int
    precision_at_5: float  # k = min(5, relevant)
    precision_at_10: float  # k = min(10, relevant)
    r_precision: float  # k = relevant


@dataclass
class EvalResult:
    queries: list[QueryResult]
    zero_shot_accuracy: float  # single-shape pictures, argmax over the 40 label queries
    neighbour_precision: float  # single-shape pictures: share of 3 nearest sharing the label
    calibrated: dict[str, float] = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        return sum(float(getattr(q, metric)) for q in self.queries) / len(self.queries)

    def minimum(self, metric: str) -> float:
        return min(float(getattr(q, metric)) for q in self.queries)

    def summary(self) -> str:
        parts = [
            f"{label} mean {self.mean(metric):.3f} min {self.minimum(metric):.2f}"
            for label, metric in (
                ("P@5", "precision_at_5"),
                ("P@10", "precision_at_10"),
                ("R-prec", "r_precision"),
            )
        ]
        parts.append(f"zero-shot top-1 {self.zero_shot_accuracy:.3f}")
        parts.append(f"image-neighbour P@3 {self.neighbour_precision:.3f}")
        parts += [f"{key} {value:.3f}" for key, value in self.calibrated.items()]
        return " | ".join(parts)


def load_like_service(path: Path, min_side: int = IMAGE_SIZE) -> Image.Image:
    """Decode as images/loading.py does: JPEG draft mode down to >= min_side, then RGB."""
    with Image.open(path) as image:
        width, height = image.size
        scale = min(width, height) / min_side
        if image.format == "JPEG" and scale >= 2:
            image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        return image.convert("RGB")


def encode_files(model: ClipModel, preprocess: Preprocess, paths: Sequence[Path]) -> torch.Tensor:
    """Encode JPEG files the way the service does: decode, RGB, preprocess, normalise."""
    features = []
    for start in range(0, len(paths), 64):
        batch = [preprocess(load_like_service(path)) for path in paths[start : start + 64]]
        features.append(encode_image(model, torch.stack(batch)))
    return torch.cat(features)


@torch.no_grad()
def evaluate(
    model: ClipModel,
    preprocess: Preprocess,
    tokenize: Tokenize,
    pictures: list[tuple[Path, SyntheticPicture]],
    sigmoid: bool,
) -> EvalResult:
    """Retrieval over held-out JPEG files with the 40 single-shape text queries."""
    image_features = encode_files(model, preprocess, [path for path, _ in pictures])
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
        hits = relevant[row][similarity[row].argsort(descending=True)].float()
        results.append(
            QueryResult(
                query=query,
                relevant=count,
                precision_at_5=float(hits[: min(5, count)].mean()),
                precision_at_10=float(hits[: min(10, count)].mean()),
                r_precision=float(hits[:count].mean()),
            )
        )

    single = [i for i, (_, picture) in enumerate(pictures) if len(picture.shapes) == 1]
    truth = torch.tensor([ALL_SPECS.index(pictures[i][1].shapes[0]) for i in single])
    accuracy = float((similarity[:, single].argmax(dim=0) == truth).float().mean())

    image_similarity = image_features[single] @ image_features.T
    image_similarity[torch.arange(len(single)), torch.tensor(single)] = -2.0  # not itself
    neighbours = image_similarity.topk(3, dim=1).indices
    shared = relevant[truth[:, None], neighbours].float()
    neighbour_precision = float(shared.mean())

    calibrated: dict[str, float] = {}
    if sigmoid:
        scale, bias = model.logit_scale.exp(), model.logit_bias
        probability = torch.sigmoid(similarity * scale + bias)
        own = encode_text(model, tokenize([picture.caption for _, picture in pictures]))
        own_probability = torch.sigmoid((own * image_features).sum(dim=-1) * scale + bias)
        selected = probability >= 0.5
        calibrated = {
            "p(own caption)": float(own_probability.mean()),
            "p(label|single)": float(probability[truth, torch.tensor(single)].mean()),
            "p(label|any)": float(probability[relevant].mean()),
            "p(non-match)": float(probability[~relevant].mean()),
            "p>=0.5 precision": float(relevant[selected].float().mean()) if selected.any() else 0.0,
            "p>=0.5 recall": float(selected[relevant].float().mean()),
        }
    return EvalResult(
        queries=results,
        zero_shot_accuracy=accuracy,
        neighbour_precision=neighbour_precision,
        calibrated=calibrated,
    )


def check_and_load(spec: ModelSpec, target: Path) -> tuple[ClipModel, Preprocess, Tokenize]:
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
            # open_clip reports the model's image_size: an int or an (h, w) pair.
            loaded = list(loaded) if isinstance(loaded, tuple | list) else [loaded, loaded]
            value = [value, value]
        if (list(loaded) if isinstance(loaded, tuple | list) else loaded) != value:
            raise RuntimeError(f"{spec.name}: preprocess {key} is {loaded!r}, config {value!r}")
    if repr(preprocess) != repr(make_preprocess(spec.preprocess_cfg)):
        raise RuntimeError(f"{spec.name}: open_clip built a different preprocess:\n{preprocess}")
    expected_class = (
        open_clip.CustomTextCLIP if spec.model_cfg.get("custom_text") else open_clip.CLIP
    )
    if type(model) is not expected_class:
        raise RuntimeError(f"{spec.name}: loaded {type(model).__name__}")
    model.eval()
    loaded_model: ClipModel = model
    return loaded_model, preprocess, tokenizer


def print_report(spec: ModelSpec, result: EvalResult, held_out: int) -> None:
    print(f"\n=== {spec.name}: text->image over {held_out} held-out JPEG pictures ===")
    print(f"{'query':<24} {'relevant':>8} {'P@5':>6} {'P@10':>6} {'R-prec':>7}")
    for q in result.queries:
        print(
            f"{q.query:<24} {q.relevant:>8d} {q.precision_at_5:>6.2f} "
            f"{q.precision_at_10:>6.2f} {q.r_precision:>7.2f}"
        )
    print(result.summary())


def check_targets(name: str, result: EvalResult) -> list[str]:
    """The figures the project's quality tests rely on, with some margin."""
    failures = [
        f"{name}: P@5 {q.precision_at_5:.2f} for {q.query!r}"
        for q in result.queries
        if q.precision_at_5 < 0.8
    ]
    if result.mean("precision_at_10") < 0.9:
        failures.append(f"{name}: mean P@10 {result.mean('precision_at_10'):.2f} < 0.9")
    if result.calibrated:
        if result.calibrated["p(label|single)"] < 0.8:
            failures.append(f"{name}: matching captions score below 0.8 on average")
        if result.calibrated["p(non-match)"] > 0.05:
            failures.append(f"{name}: non-matching captions score above 0.05 on average")
    return failures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--steps", type=int, default=2500, help="demo-clip training steps")
    parser.add_argument(
        "--siglip-steps",
        type=int,
        default=None,
        help="demo-siglip steps (default: 80%% of --steps from demo-clip, else --steps)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", choices=list(MODEL_SPECS), default=list(MODEL_SPECS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-count", type=int, default=400, help="held-out pictures")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between evaluations")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    failures = []
    clip_state: dict[str, torch.Tensor] | None = None
    with tempfile.TemporaryDirectory(prefix="tiny-models-eval-") as tmp:
        # Held out: independent seed, other picture sizes and JPEG qualities.
        held_out = write_library(
            Path(tmp),
            args.eval_count,
            seed=args.seed + 1_000_003,
            jpeg_quality_range=(55, 90),
            size_range=(140, 360),
        )
        # demo-clip first: demo-siglip starts from its towers.
        for name in [n for n in MODEL_SPECS if n in args.models]:
            spec = MODEL_SPECS[name]
            config = TrainConfig(
                steps=args.steps, seed=args.seed, lr=args.lr, eval_every=args.eval_every
            )
            init_state = None
            if spec.sigmoid_loss:
                # The sigmoid loss scores each text-picture pair on its own: a pair
                # picture only gets a high "a red circle" probability if it is often
                # captioned that way.
                config.partial_caption_probability = 0.7
                # From demo-clip as just trained (fp32); on its own, from the written
                # fp16 file, which gives nearly but not exactly the same weights.
                init_state = clip_state
                clip_file = args.out / "demo-clip" / "open_clip_model.safetensors"
                if init_state is None and clip_file.is_file():
                    vocab = CompactVocab(make_tokenizer(), all_training_texts())
                    init_state = compact_state_from_file(clip_file, vocab)
                if init_state is not None:
                    # The towers already know shapes and colours: no singles-only phase.
                    config.singles_only_fraction = 0.0
                    config.steps = args.siglip_steps or args.steps * 4 // 5
                else:
                    print("  no demo-clip weights to start from: training from scratch")
                    config.steps = args.siglip_steps or args.steps
            origin = " from demo-clip" if init_state is not None else ""
            print(f"training {name}{origin} ({config.steps} steps, seed {config.seed})", flush=True)
            model, vocab, elapsed = train(spec, config, held_out, init_state)
            if not spec.sigmoid_loss:
                clip_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            target = export(spec, model, vocab, args.out, args.seed, config.steps)
            loaded, preprocess, tokenizer = check_and_load(spec, target)
            result = evaluate(loaded, preprocess, tokenizer, held_out, spec.sigmoid_loss)
            print_report(spec, result, len(held_out))
            size_mb = (target / "open_clip_model.safetensors").stat().st_size / 1e6
            print(f"training time {elapsed:.0f}s; weights {size_mb:.1f} MB at {target}")
            failures += check_targets(name, result)
    for failure in failures:
        print(f"WARNING {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
