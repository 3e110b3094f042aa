import numpy as np

from embodied_mem.encoders import build_encoder


def test_minilm_is_the_real_offline_model():
    encoder = build_encoder("minilm")
    vectors = encoder.encode(["a red ceramic mug", "a crimson coffee cup", "a wooden double bed"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1  # meaning, not words
    assert np.allclose(encoder.encode(["a red ceramic mug"])[0], vectors[0])  # cached, identical


def test_hash_encoder_matches_words_only():
    encoder = build_encoder("gt_hash")
    a, b, c = encoder.encode(["small red mug", "red mug", "sofa"])
    assert a @ b > 0.7 and abs(a @ c) < 0.3
    assert np.allclose(build_encoder("gt_hash").encode(["small red mug"])[0], a)  # deterministic across instances
