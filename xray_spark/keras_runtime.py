"""The Keras runtime: a ``.keras`` file opened in safe mode, predicting as one TensorFlow graph, explaining by Grad-CAM.

It is the :class:`~xray_spark.model_runtime.ExplainingRuntime` of the models this product
trains, and the only module after training that touches TensorFlow or Keras.

Grad-CAM (Selvaraju et al., ICCV 2017): the gradient of the finding's score with respect
to the last convolutional feature map, averaged over the map, weights the map's channels;
the weighted sum, clipped at 0 and scaled to its maximum, is the heatmap. The score is the
finding's logit (the ``logits`` layer, before the sigmoid), as the paper takes the class
score before the softmax: on the films the worklist puts first the probability is often
1.0 in float32, where its gradient is exactly 0 and the heatmap would be blank. It needs
no change to the model and one forward and backward pass per finding. The last
convolutional map is 16 x 16 for ``small_cnn`` at 128 px (8 px a cell) and 7 x 7 for
DenseNet-121 at 224 px (32 px a cell): the box around the hot region is as coarse as that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xray_spark.models import keras, load_model_safely


class KerasRuntime:
    """A Keras model behind the runtime protocol (:class:`~xray_spark.model_runtime.ExplainingRuntime`)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._forward: Any = None
        self._cam_model: Any = None

    @classmethod
    def open(cls, model_file: str) -> KerasRuntime:
        return cls(load_model_safely(model_file))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape[1:])

    @property
    def n_outputs(self) -> int:
        return int(self.model.output_shape[-1])

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """The inference pass as one TensorFlow graph (``tf.function``), traced once for any batch length.

        Calling the Keras model eagerly runs its layers op by op from Python, which is much
        slower than one graph for the same batches (``bench/results/``, the score runs).
        """
        if self._forward is None:
            from xray_spark.tf_quiet import import_tensorflow

            tf = import_tensorflow()
            signature = [tf.TensorSpec([None, *self.input_shape], tf.uint8)]
            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False), input_signature=signature)
        return np.asarray(self._forward(pixels), dtype=np.float32)

    def explain(self, pixels: np.ndarray, findings: np.ndarray) -> np.ndarray:
        """Grad-CAM heatmaps in [0, 1] for each film's finding (index into the outputs)."""
        if self._cam_model is None:
            self._cam_model = grad_cam_model(self.model)
        return grad_cam(self._cam_model, pixels, findings)


def feature_layer(model: Any) -> Any:
    """The last layer whose output is a spatial feature map (4-D, not a pooling layer)."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output_shape", None)
        spatial = isinstance(shape, tuple) and len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1
        if spatial and "pool" not in type(layer).__name__.lower():
            return layer
    raise ValueError(f"model {model.name} has no convolutional feature map for Grad-CAM")


def score_layer(model: Any) -> Any:
    """The layer whose output Grad-CAM differentiates: the logits before the sigmoid where the model names them."""
    try:
        return model.get_layer("logits")
    except ValueError:
        return model.layers[-1]  # a model without one: its probabilities (saturate at the extremes)


def grad_cam_model(model: Any) -> Any:
    """A model with two outputs: the last feature map and the findings' scores (logits)."""
    k = keras()
    return k.Model(model.inputs, [feature_layer(model).output, score_layer(model).output])


def grad_cam(cam_model: Any, images: np.ndarray, findings: np.ndarray) -> np.ndarray:
    """Heatmaps in [0, 1] (N x h x w) for ``images`` (N x S x S x 1, uint8), finding index per image."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    out = None
    for f in np.unique(findings):
        rows = np.flatnonzero(findings == f)
        batch = tf.convert_to_tensor(images[rows])
        with tf.GradientTape() as tape:
            maps, scores = cam_model(batch, training=False)
            score = tf.cast(scores[:, int(f)], tf.float32)
        grads = tape.gradient(score, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy()
        if out is None:
            out = np.zeros((len(images), *cams.shape[1:]), dtype=np.float32)
        peak = cams.reshape(len(rows), -1).max(axis=1)
        out[rows] = cams / np.where(peak > 0, peak, 1.0)[:, None, None]
    return out if out is not None else np.zeros((0, 1, 1), dtype=np.float32)
