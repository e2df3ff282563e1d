"""INT8 judged by retrieval: recall@10 against fp32 on a probe set, plus a cosine floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from image_search_service.encoders import cpu
from image_search_service.encoders.onnx_export import (
    INT8_MIN_COSINE,
    INT8_MIN_RECALL,
    int8_refusal,
    recall_at_k,
)


def _vectors(rows: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


class TestRecall:
    def test_the_same_vectors_recall_everything(self) -> None:
        corpus, queries = _vectors(100), _vectors(20, seed=1)
        assert recall_at_k((queries, corpus), (queries, corpus)) == 1.0
        assert recall_at_k((corpus, corpus), (corpus, corpus), exclude_self=True) == 1.0

    def test_a_small_perturbation_keeps_neighbours_and_noise_does_not(self) -> None:
        corpus, queries = _vectors(200), _vectors(30, seed=1)
        rng = np.random.default_rng(2)
        close = corpus + 1e-4 * rng.normal(size=corpus.shape).astype(np.float32)
        assert recall_at_k((queries, corpus), (queries, close)) == 1.0
        unrelated = _vectors(200, seed=3)
        assert recall_at_k((queries, corpus), (queries, unrelated)) < 0.2

    def test_one_swapped_neighbour_in_ten_costs_a_tenth(self) -> None:
        corpus = np.eye(12, dtype=np.float32)
        query = np.zeros((1, 12), dtype=np.float32)
        query[0, :10] = np.linspace(1.0, 0.5, 10)  # rows 0-9 nearest, rows 10-11 zero
        moved = corpus.copy()
        moved[9], moved[10] = corpus[10], corpus[9]  # row 10 takes row 9's place
        assert recall_at_k((query, corpus), (query, moved)) == pytest.approx(0.9)

    def test_near_ties_count_within_the_tolerance_only(self) -> None:
        query = np.ones((1, 1), dtype=np.float32)
        # 1-d vectors: every score is +1; make the 10th and 11th nearly tie via scale
        # (the score is the cosine: unit rows, so use 2-d rows at chosen angles).
        angles = np.concatenate([np.linspace(0.0, 0.5, 10), [0.5 + 1e-4, 1.5]])
        corpus = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
        query = np.array([[1.0, 0.0]], dtype=np.float32)
        swapped = corpus.copy()
        swapped[[9, 10]] = corpus[[10, 9]]  # the near-tie changes places
        assert recall_at_k((query, corpus), (query, swapped)) == pytest.approx(0.9)
        assert recall_at_k((query, corpus), (query, swapped), tie=1e-3) == 1.0
        far = corpus.copy()
        far[[9, 11]] = corpus[[11, 9]]  # a clearly worse row takes the 10th place
        assert recall_at_k((query, corpus), (query, far), tie=1e-3) == pytest.approx(0.9)

    def test_nan_vectors_recall_nothing(self) -> None:
        corpus = _vectors(50)
        broken = corpus.copy()
        broken[3, 0] = np.nan
        assert recall_at_k((corpus, corpus), (corpus, broken), exclude_self=True) == 0.0


def _refusal(cosines: dict[str, float], recalls: dict[str, float]) -> str | None:
    return int8_refusal(cosines, recalls=recalls, isa="avx2", settings=cpu.U8U8)


class TestTheRule:
    def test_recall_and_cosine_at_their_thresholds_are_accepted(self) -> None:
        recalls = {"picture": INT8_MIN_RECALL, "text": 1.0}
        cosines = {"image": INT8_MIN_COSINE, "text": 0.9999}
        assert _refusal(cosines, recalls) is None

    def test_a_cosine_the_old_rule_refused_is_accepted_when_neighbours_hold(self) -> None:
        # A random-weight ViT-B-32's dynamic INT8 (0.9939 < 0.999, the old threshold).
        cosines = {"image": 0.9939, "text": 0.9995}
        recalls = {"picture": 0.99, "text": 0.985}
        assert _refusal(cosines, recalls) is None

    @pytest.mark.parametrize("queries", ["picture", "text"])
    def test_lost_neighbours_are_refused_whatever_the_cosine(self, queries: str) -> None:
        recalls = {"picture": 1.0, "text": 1.0, queries: 0.97}
        reason = _refusal({"image": 1.0, "text": 1.0}, recalls)
        assert reason is not None
        assert f"recall@10 of {queries} queries against fp32 0.970 < {INT8_MIN_RECALL}" in reason
        assert "avx2" in reason

    def test_below_the_cosine_floor_is_refused_whatever_the_recall(self) -> None:
        recalls = {"picture": 1.0, "text": 1.0}
        reason = _refusal({"image": 0.985, "text": 1.0}, recalls)
        assert reason is not None
        assert "min cosine" in reason

    def test_nan_recall_is_refused(self) -> None:
        recalls = {"picture": math.nan, "text": 1.0}
        assert _refusal({"image": 1.0, "text": 1.0}, recalls) is not None
