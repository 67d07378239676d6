import numpy as np
import pytest
import tensorflow as tf

from tfslim.pruning import Granularity


def _mask(granularity, weight, sparsity):
    return granularity.compute_mask(tf.constant(weight), tf.constant(sparsity)).numpy()


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8, 0.95])
def test_unstructured_prunes_exact_count_of_smallest(sparsity):
    weight = np.random.default_rng(0).normal(size=(24, 10)).astype("float32")
    mask = _mask(Granularity(), weight, sparsity)
    assert mask.dtype == np.float32
    assert int((mask == 0).sum()) == round(sparsity * weight.size)
    if sparsity > 0:
        assert np.abs(weight[mask == 0]).max() <= np.abs(weight[mask == 1]).min()


def test_unstructured_ties_still_give_exact_count():
    weight = np.zeros((8, 8), "float32")
    weight[0, :4] = 1.0
    mask = _mask(Granularity(), weight, 0.5)
    assert int((mask == 0).sum()) == 32
    assert mask[0, :4].tolist() == [1, 1, 1, 1]


def test_block_1x16_on_tflite_layout_of_dense_kernel():
    # Keras Dense kernel is (in, out); TFLite stores (out, in): a 1x16 block is 16
    # consecutive inputs of one output unit, i.e. 16 consecutive rows of one kernel column.
    weight = np.random.default_rng(1).normal(size=(64, 8)).astype("float32")
    mask = _mask(Granularity(block_size=(1, 16)), weight, 0.75)
    blocks = mask.T.reshape(8, 4, 16)
    assert np.all((blocks == 0).all(-1) | (blocks == 1).all(-1))
    assert (mask == 0).mean() == 0.75


def test_block_on_conv_kernel_and_uneven_edges():
    weight = np.random.default_rng(2).normal(size=(3, 3, 5, 6)).astype("float32")
    mask = _mask(Granularity(block_size=(2, 4)), weight, 0.5)
    matrix = mask.reshape(-1, 6).T  # (out=6, 45)
    full = matrix[:, :44].reshape(3, 2, 11, 4)
    assert np.all((full == 0).all((1, 3)) | (full == 1).all((1, 3)))
    assert mask.shape == weight.shape


def test_block_max_pooling_keeps_block_with_one_large_weight():
    weight = np.full((16, 2), 0.1, "float32")
    weight[3, 1] = 10.0
    weight[:, 0] = 0.5
    avg = _mask(Granularity(block_size=(1, 16), block_pooling_type="AVG"), weight, 0.5)
    mx = _mask(Granularity(block_size=(1, 16), block_pooling_type="MAX"), weight, 0.5)
    assert avg[:, 1].sum() == 16 and avg[:, 0].sum() == 0
    assert mx[:, 1].sum() == 16 and mx[:, 0].sum() == 0
    weight[3, 1] = 0.2
    avg = _mask(Granularity(block_size=(1, 16)), weight, 0.5)
    assert avg[:, 0].sum() == 16


@pytest.mark.parametrize("shape", [(8, 3), (3, 3, 8, 4)])
def test_m_by_n_two_zeros_in_every_four_input_channels(shape):
    weight = np.random.default_rng(3).normal(size=shape).astype("float32")
    mask = _mask(Granularity(sparsity_m_by_n=(2, 4)), weight, 0.9)
    moved = np.moveaxis(mask, -2, -1)  # input channels last
    groups = moved.reshape(-1, 4)
    assert np.all((groups == 0).sum(-1) == 2)
    moved_w = np.abs(np.moveaxis(weight, -2, -1)).reshape(-1, 4)
    kept_min = np.where(groups == 1, moved_w, np.inf).min(-1)
    dropped_max = np.where(groups == 0, moved_w, -np.inf).max(-1)
    assert np.all(kept_min >= dropped_max)
    assert Granularity(sparsity_m_by_n=(2, 4)).fixed_sparsity == 0.5


def test_m_by_n_on_indivisible_layer_is_refused():
    with pytest.raises(ValueError, match=r"2:4 needs the input channels of layer 'd'.*\(6, 3\)"):
        Granularity(sparsity_m_by_n=(2, 4)).check_weight((6, 3), "layer 'd' (Dense)")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": (0, 4)}, r"`block_size`.*block_size=\(0, 4\)"),
        ({"block_size": (1, 4, 1)}, r"`block_size`"),
        ({"block_pooling_type": "SUM"}, r"`block_pooling_type`.*'SUM'"),
        ({"sparsity_m_by_n": (4, 4)}, r"`sparsity_m_by_n`.*0 < m < n.*\(4, 4\)"),
        ({"sparsity_m_by_n": (2, 4), "block_size": (1, 4)}, r"cannot be combined"),
    ],
)
def test_invalid_granularity(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Granularity(**kwargs)


def test_block_on_vector_is_refused():
    with pytest.raises(ValueError, match=r"rank >= 2.*shape \(4,\)"):
        Granularity(block_size=(1, 4)).check_weight((4,), "weight 'w'")
