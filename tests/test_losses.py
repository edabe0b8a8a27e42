import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.model import losses


def test_error_rate_counts_ties_and_nan_as_errors():
    F = np.array([[2.0, -1.0, 0.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    y = np.array([1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(losses.error_rate(F, y), [0.75, 0.0])
    assert np.asarray(losses.misclassified(tf.constant([np.nan, -3.0], tf.float32), -1.0)).tolist() \
        == [True, False]


def test_alpha_loss_is_eq7():
    F, y = tf.constant([0.5, -2.0], tf.float64), tf.constant([1.0, 1.0], tf.float64)
    per_pattern = losses.get("hinge")
    assert float(losses.alpha_loss(per_pattern, F, y, 2.0, 4)) == pytest.approx((0.5 + 3.0) / 16)
