"""`Distiller`: `keras.distillation.Distiller` for students that are being shrunk.

Additions over Keras: the temperature and the student-loss weight are variables (a callback can
change them without retracing the train step, and they are saved with the weights), teachers
and students that end in softmax are handled (log-probabilities are used as logits), the
supervised loss reads logits and softmax outputs the same way (Keras's
`"sparse_categorical_crossentropy"` would read logits as probabilities), the student's
regularization losses are kept, the arguments (feature-distillation layer shapes included) are
checked up front with messages naming them, and `stripped_student()` returns the plain model
that `tfslim.convert` takes.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops
from keras.distillation import DistillationLoss, LogitsDistillation

from tfslim._checks import check_float, check_positive_float
from tfslim._compat import is_tf_keras
from tfslim.distillation.features import check_distillation_losses
from tfslim.errors import TfslimWarning

# Hinton et al. (2015): when the student is much too small to capture the teacher, low
# temperatures work best (they ignore the teacher's very negative logits). On MNIST-1D a
# 1.5k-parameter student distilled at T=1 beats the student alone; at Keras's T=3 it loses.
DEFAULT_TEMPERATURE = 1.0
_EPSILON = 1e-7
# A QAT softmax output is rounded to steps of 1/256, so its rows sum to 1 only within ~0.02.
_SUM_TOLERANCE = 0.05
# Set while `from_config` rebuilds a saved distiller, whose teacher has no optimizer steps yet.
_LOADING = [False]


def _check_model(argument: str, model) -> None:
    if is_tf_keras(model):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a Keras 3 `keras.Model`; "
            f"tf_keras models cannot be distilled with keras.distillation. Rebuild the model "
            f"with `import keras` (Keras 3). Received: {argument}={model.name!r} of type "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a `keras.Model`. "
            f"Received: {argument}={model!r} of type {type(model).__name__}"
        )
    if not model.built or not model.weights:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a built model with weights "
            f"(call it on data or give it an `Input`; the teacher must also be trained). "
            f"Received: {argument}={model.name!r} with no weights"
        )


def _output_shapes(model):
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    return [tuple(t.shape) for t in outputs]


def _check_pair(teacher, student) -> None:
    if student is teacher:
        raise ValueError(
            "Invalid value for argument `student`. Expected a model other than the teacher. "
            f"Received: student={student.name!r}, the teacher itself"
        )
    teacher_ids = {id(v) for v in teacher.weights}
    shared = [v.path for v in student.weights if id(v) in teacher_ids]
    if shared:
        raise ValueError(
            "Invalid value for argument `student`. Expected a model that shares no weights with "
            f"the teacher (it would train the teacher too). Received: student={student.name!r} "
            f"sharing {shared[:3]}"
        )
    t_shapes, s_shapes = _output_shapes(teacher), _output_shapes(student)
    if t_shapes is None or s_shapes is None:
        return
    compatible = len(t_shapes) == len(s_shapes) and all(
        len(t) == len(s)
        and all(a is None or b is None or a == b for a, b in zip(t, s, strict=True))
        for t, s in zip(t_shapes, s_shapes, strict=True)
    )
    if not compatible:
        raise ValueError(
            "Invalid value for argument `student`. Expected outputs shaped like the teacher's "
            f"{t_shapes}. Received: student={student.name!r} with outputs {s_shapes}"
        )


def _check_teacher_trained(teacher) -> None:
    optimizer = getattr(teacher, "optimizer", None)
    if optimizer is not None and int(optimizer.iterations.numpy()) == 0:
        warnings.warn(
            f"The teacher {teacher.name!r} is compiled but was never trained (its optimizer "
            "made 0 steps); distilling from untrained weights teaches the student noise.",
            TfslimWarning,
            stacklevel=3,
        )


def _check_weight(argument: str, value) -> float:
    return check_float(argument, value, minimum=0, maximum=1)


def _check_temperature(value) -> float:
    return check_positive_float("temperature", value)


def _as_logits(outputs, from_logits):
    """Returns logits: log-probabilities if `outputs` are probabilities.

    With `from_logits=None` this is decided in the graph, per batch: rows that are non-negative
    and sum to 1 are softmax outputs. Softmax is invariant to the constant that separates
    log-probabilities from the original logits, so the distillation loss is unchanged.
    """
    if from_logits:
        return outputs
    # Keras's softmax (and tfslim's fake-quantized one) marks its output with the logits it
    # came from: exact, and free of the clipping and of int8's 1/256 rounding of QAT outputs.
    logits = getattr(outputs, "_keras_logits", None)
    if logits is not None:
        return logits
    log_probs = ops.log(ops.clip(outputs, _EPSILON, 1.0))
    if from_logits is False:
        return log_probs
    sums = ops.sum(outputs, axis=-1)
    is_prob = ops.logical_and(
        ops.all(ops.greater_equal(outputs, 0.0)),
        ops.all(ops.less(ops.abs(sums - 1.0), _SUM_TOLERANCE)),
    )
    return ops.where(is_prob, log_probs, outputs)


def is_probabilities(outputs) -> bool:
    """Whether eager `outputs` are rows of probabilities (non-negative, summing to 1)."""
    values = ops.convert_to_numpy(outputs)
    return bool((values >= 0).all() and (abs(values.sum(axis=-1) - 1.0) < _SUM_TOLERANCE).all())


def _as_float(variable) -> float:
    # float32 variables hold 0.3 as 0.30000001; the config should read back what was passed.
    return float(f"{float(variable.numpy()):.7g}")


def _is_kl(loss_fn) -> bool:
    # `keras.losses.get("kl_divergence")` is a function, which Keras' own LogitsDistillation
    # does not recognise, so it would compare log-probabilities as if they were probabilities.
    if isinstance(loss_fn, keras.losses.KLDivergence):
        return True
    return getattr(loss_fn, "__name__", None) in ("kl_divergence", "kld", "KLD")


_CROSSENTROPIES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
}


def logits_crossentropy(loss_fn):
    """Returns the `from_logits=True` form of a categorical cross-entropy, else `None`.

    `"sparse_categorical_crossentropy"` resolves to Keras's `from_logits=False` loss, which
    reads a logits output as probabilities (clipped to [1e-7, 1]): a student ending in
    `Dense(10)` then trains on a broken loss. Given logits, or the log-probabilities of a
    softmax output, the `from_logits=True` form is exact for both kinds of model.
    """
    for name, cls in _CROSSENTROPIES.items():
        if isinstance(loss_fn, cls):
            config = loss_fn.get_config()
            config["from_logits"] = True
            return cls.from_config(config)
        if getattr(loss_fn, "__name__", None) == name:
            return cls(from_logits=True)
    return None


def _apply(loss_fn, target, pred, sample_weight):
    if sample_weight is None:
        return loss_fn(target, pred)
    if isinstance(loss_fn, keras.losses.Loss):
        return loss_fn(target, pred, sample_weight=sample_weight)
    # Loss names resolve to plain per-sample functions, which take no sample weights.
    values = loss_fn(target, pred)
    return values * ops.reshape(ops.cast(sample_weight, values.dtype), ops.shape(values))


@keras.saving.register_keras_serializable(package="tfslim")
class Distiller(keras.distillation.Distiller):
    """Trains a (QAT and/or pruned) student from a frozen float teacher during `fit`.

    Same constructor as `keras.distillation.Distiller`, plus `temperature` and `from_logits`.
    `temperature` and `student_loss_weight` live in non-trainable variables: change them with
    `tfslim.callbacks.DistillationSchedule` (or `distiller.temperature.assign(...)`) without
    retracing. Pruning callbacks given to `fit` prune the student only: the teacher is frozen,
    so it has no trainable kernel to mask. After `fit`, `stripped_student()` is the model to
    evaluate, save and give to `tfslim.convert`; the teacher is never part of it.

    The teacher always runs in inference mode (`training=False`: no dropout, batch-norm moving
    statistics). Outputs may be logits or probabilities: with `from_logits=None` the logits
    behind a softmax are used (Keras's `_keras_logits` mark, also set by tfslim's QAT softmax,
    else the log of the probabilities), for the distillation term and for a categorical
    cross-entropy given to `compile`, which is applied in its `from_logits=True` form. The
    distillation term is Hinton's KL divergence between the softened distributions times
    `temperature**2`, so its gradient keeps the scale of the supervised term at any temperature.

    Defaults, and why: `temperature=1.0`, not Keras's 3.0. Hinton et al. (2015) found that a
    student much too small to capture the teacher learns best at low temperatures, which
    ignore the teacher's very negative logits; the small students tfslim makes are that kind.
    Measured on MNIST-1D (`benchmarks/distillation_benchmark.py`, 3 seeds, same optimizer and
    epochs): a 1.5k-parameter student distilled at T=1 beats the student alone, at T=3 it
    falls below it. `student_loss_weight=0.5` (as Keras) weighs labels and teacher equally.
    Feature distillation (`FeatureDistillation(loss, teacher_layer_name, student_layer_name)`)
    is checked here: the two layers must have the same output shape.

    Args:
        teacher: keras.Model. Trained, built float model; frozen here.
        student: keras.Model. The model to train: plain, from `tfslim.quantize_model`, from
            `tfslim.prune_low_magnitude`, or to be pruned by `tfslim.callbacks.Pruning`.
        distillation_losses: `keras.distillation.DistillationLoss` or a list of them.
            Defaults to `None` (`LogitsDistillation` at `temperature`).
        distillation_loss_weights: list of floats, one per distillation loss. Defaults to
            `None` (all 1).
        student_loss_weight: float in [0, 1], weight of the supervised loss; the distillation
            loss gets `1 - student_loss_weight`. Defaults to `0.5`.
        temperature: float > 0, softmax temperature of every `LogitsDistillation` loss.
            Defaults to `None` (the losses' own temperature; 1.0 for the default loss).
        from_logits: bool or None. Whether model outputs are logits; `None` detects softmax
            outputs per batch and takes their log. Defaults to `None`.
        name: str. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Raises:
        TypeError: a model is not a Keras 3 `keras.Model` (tf_keras models included), or a
            distillation loss is not a `keras.distillation.DistillationLoss`.
        ValueError: an unbuilt model, the student is (or shares weights with) the teacher,
            output shapes differ, a weight or temperature out of range, loss weights that do
            not match the losses, or a `FeatureDistillation` naming a missing layer or layers
            of different output shapes.

    Example:

    >>> import keras, numpy as np
    >>> import tfslim
    >>> x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = tfslim.distillation.Distiller(teacher, student, temperature=4.0)
    >>> distiller.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> distiller.stripped_student() is student
    True
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        distillation_losses: DistillationLoss | list[DistillationLoss] | None = None,
        distillation_loss_weights: list[float] | None = None,
        student_loss_weight: float = 0.5,
        *,
        temperature: float | None = None,
        from_logits: bool | None = None,
        name: str = "distiller",
        **kwargs,
    ):
        _check_model("teacher", teacher)
        _check_model("student", student)
        _check_pair(teacher, student)
        if not _LOADING[0]:
            _check_teacher_trained(teacher)
        student_loss_weight = _check_weight("student_loss_weight", student_loss_weight)
        if from_logits not in (None, True, False):
            raise ValueError(
                "Invalid value for argument `from_logits`. Expected True, False or None. "
                f"Received: from_logits={from_logits!r}"
            )
        if distillation_losses is None:
            distillation_losses = LogitsDistillation(
                temperature=DEFAULT_TEMPERATURE
                if temperature is None
                else _check_temperature(temperature)
            )
        losses = (
            list(distillation_losses)
            if isinstance(distillation_losses, (list, tuple))
            else [distillation_losses]
        )
        check_distillation_losses(teacher, student, losses, distillation_loss_weights)
        temperature = self._initial_temperature(losses, temperature)
        self._from_logits = from_logits
        super().__init__(
            teacher,
            student,
            distillation_losses=distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            name=name,
            **kwargs,
        )
        self.temperature = keras.Variable(
            temperature, dtype="float32", trainable=False, name="temperature"
        )
        self.student_loss_weight_variable = keras.Variable(
            student_loss_weight, dtype="float32", trainable=False, name="student_loss_weight"
        )
        # Teacher and student are built (checked above), so is the distiller: `load_weights`
        # (e.g. from a weights-only ModelCheckpoint) works on a fresh one.
        self.built = True

    @staticmethod
    def _initial_temperature(losses, temperature) -> float:
        if temperature is not None:
            return _check_temperature(temperature)
        values = {float(x.temperature) for x in losses if isinstance(x, LogitsDistillation)}
        if len(values) > 1:
            raise ValueError(
                "Invalid value for argument `distillation_losses`. Expected LogitsDistillation "
                "losses with one temperature (the distiller schedules a single one), or pass "
                f"`temperature`. Received temperatures: {sorted(values)}"
            )
        return values.pop() if values else DEFAULT_TEMPERATURE

    def _logits_loss(self, loss: LogitsDistillation, teacher_out, student_out):
        temperature = ops.cast(self.temperature, "float32")

        def one(loss_fn, t, s):
            if loss_fn is None:
                return 0.0
            t = _as_logits(t, self._from_logits) / temperature
            s = _as_logits(s, self._from_logits) / temperature
            if _is_kl(loss_fn):
                value = ops.mean(loss_fn(ops.softmax(t, axis=-1), ops.softmax(s, axis=-1)))
                return value * temperature * temperature
            return ops.mean(loss_fn(t, s))

        values = keras.tree.flatten(
            keras.tree.map_structure(one, loss.loss, teacher_out, student_out)
        )
        return ops.sum(ops.stack([ops.cast(v, "float32") for v in values]))

    def _student_term(self, sample_weight):
        def term(loss_fn, target, pred):
            # The supervised loss reads the outputs the way the distillation term does.
            logits_fn = logits_crossentropy(loss_fn)
            if logits_fn is None:
                return _apply(loss_fn, target, pred, sample_weight)
            return _apply(logits_fn, target, _as_logits(pred, self._from_logits), sample_weight)

        return term

    @staticmethod
    def _features(loss, features, teacher: bool):
        attribute = "teacher_layer_name" if teacher else "student_layer_name"
        return features[getattr(loss, attribute, None) or "final_output"]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        alpha = ops.cast(self.student_loss_weight_variable, "float32")
        student_loss = ops.convert_to_tensor(0.0)
        if y is not None:
            values = keras.tree.flatten(
                keras.tree.map_structure(
                    self._student_term(sample_weight), self._student_loss, y, y_pred
                )
            )
            student_loss = ops.mean(ops.sum(ops.stack([ops.mean(v) for v in values])))
        teacher_features = self._extract_all_teacher_features(x)
        student_features = self._extract_all_student_features(x, y_pred)
        distill_loss = ops.convert_to_tensor(0.0)
        for loss, weight in zip(
            self.distillation_losses, self.distillation_loss_weights, strict=True
        ):
            named = getattr(loss, "teacher_layer_name", None) is not None
            t_out = self._features(loss, teacher_features, True)
            s_out = self._features(loss, student_features, False) if named else y_pred
            loss.validate_outputs(t_out, s_out)
            if isinstance(loss, LogitsDistillation):
                value = self._logits_loss(loss, t_out, s_out)
            else:
                value = ops.cast(loss.compute_loss(t_out, s_out), "float32")
            distill_loss = distill_loss + float(weight) * value
        total = alpha * student_loss + (1.0 - alpha) * distill_loss
        if self.student.losses:
            total = total + ops.sum(
                ops.stack([ops.cast(v, "float32") for v in self.student.losses])
            )
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distill_loss)
        self.total_loss_tracker.update_state(total)
        return total

    def stripped_student(self) -> keras.Model:
        """Returns the student as a plain model for evaluation, saving and `tfslim.convert`.

        Pruning wrappers (from `tfslim.prune_low_magnitude`) are stripped; a QAT student stays
        a QAT model (the converter reads its ranges). Masks attached by the `Pruning` callback
        are already gone after `fit`, their zeros kept.
        """
        from tfslim.pruning import strip_pruning
        from tfslim.pruning.wrapper import find_wrappers

        if find_wrappers(self.student):
            return strip_pruning(self.student)
        return self.student

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and getattr(self, "_student_loss_for_serialization", None):
            config["loss"] = keras.saving.serialize_keras_object(
                self._student_loss_for_serialization
            )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_config(cls, config):
        _LOADING[0] = True
        try:
            return super().from_config(config)
        finally:
            _LOADING[0] = False

    def get_config(self):
        config = super().get_config()
        config["student_loss_weight"] = _as_float(self.student_loss_weight_variable)
        config["temperature"] = _as_float(self.temperature)
        config["from_logits"] = self._from_logits
        return config
