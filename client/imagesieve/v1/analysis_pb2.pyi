from imagesieve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelledSource(_message.Message):
    __slots__ = ("collection", "inline")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    inline: InlineImages
    def __init__(self, collection: _Optional[str] = ..., inline: _Optional[_Union[InlineImages, _Mapping]] = ...) -> None: ...

class InlineImages(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ...) -> None: ...

class ScoreLabelsRequest(_message.Message):
    __slots__ = ("source", "method", "top_fraction", "folds", "classifier", "seed", "pixels")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    source: LabelledSource
    method: str
    top_fraction: float
    folds: int
    classifier: str
    seed: int
    pixels: bool
    def __init__(self, source: _Optional[_Union[LabelledSource, _Mapping]] = ..., method: _Optional[str] = ..., top_fraction: _Optional[float] = ..., folds: _Optional[int] = ..., classifier: _Optional[str] = ..., seed: _Optional[int] = ..., pixels: _Optional[bool] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("key", "given_label", "suggested_label", "suggested_probability", "score", "neighbor_agreement", "in_ambiguous_pair")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GIVEN_LABEL_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    IN_AMBIGUOUS_PAIR_FIELD_NUMBER: _ClassVar[int]
    key: str
    given_label: str
    suggested_label: str
    suggested_probability: float
    score: float
    neighbor_agreement: float
    in_ambiguous_pair: bool
    def __init__(self, key: _Optional[str] = ..., given_label: _Optional[str] = ..., suggested_label: _Optional[str] = ..., suggested_probability: _Optional[float] = ..., score: _Optional[float] = ..., neighbor_agreement: _Optional[float] = ..., in_ambiguous_pair: _Optional[bool] = ...) -> None: ...

class ConfusedClassPair(_message.Message):
    __slots__ = ("class_a", "class_b", "excess")
    CLASS_A_FIELD_NUMBER: _ClassVar[int]
    CLASS_B_FIELD_NUMBER: _ClassVar[int]
    EXCESS_FIELD_NUMBER: _ClassVar[int]
    class_a: str
    class_b: str
    excess: float
    def __init__(self, class_a: _Optional[str] = ..., class_b: _Optional[str] = ..., excess: _Optional[float] = ...) -> None: ...

class ClassPairNoise(_message.Message):
    __slots__ = ("given_label", "true_label", "count")
    GIVEN_LABEL_FIELD_NUMBER: _ClassVar[int]
    TRUE_LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    given_label: str
    true_label: str
    count: int
    def __init__(self, given_label: _Optional[str] = ..., true_label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class LabelConflict(_message.Message):
    __slots__ = ("key_a", "key_b", "label_a", "label_b")
    KEY_A_FIELD_NUMBER: _ClassVar[int]
    KEY_B_FIELD_NUMBER: _ClassVar[int]
    LABEL_A_FIELD_NUMBER: _ClassVar[int]
    LABEL_B_FIELD_NUMBER: _ClassVar[int]
    key_a: str
    key_b: str
    label_a: str
    label_b: str
    def __init__(self, key_a: _Optional[str] = ..., key_b: _Optional[str] = ..., label_a: _Optional[str] = ..., label_b: _Optional[str] = ...) -> None: ...

class ScoreLabelsResult(_message.Message):
    __slots__ = ("scores", "suspects", "noise", "estimated_noise_rate", "conflicting_duplicates", "note", "parts", "estimated_wrong_rate", "estimated_ambiguous_rate", "ambiguous_pairs", "skipped")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SUSPECTS_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_NOISE_RATE_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WRONG_RATE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_AMBIGUOUS_RATE_FIELD_NUMBER: _ClassVar[int]
    AMBIGUOUS_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    suspects: _containers.RepeatedCompositeFieldContainer[LabelScore]
    noise: _containers.RepeatedCompositeFieldContainer[ClassPairNoise]
    estimated_noise_rate: float
    conflicting_duplicates: _containers.RepeatedCompositeFieldContainer[LabelConflict]
    note: str
    parts: int
    estimated_wrong_rate: float
    estimated_ambiguous_rate: float
    ambiguous_pairs: _containers.RepeatedCompositeFieldContainer[ConfusedClassPair]
    skipped: _containers.RepeatedCompositeFieldContainer[_common_pb2.SkippedImage]
    def __init__(self, scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., suspects: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., noise: _Optional[_Iterable[_Union[ClassPairNoise, _Mapping]]] = ..., estimated_noise_rate: _Optional[float] = ..., conflicting_duplicates: _Optional[_Iterable[_Union[LabelConflict, _Mapping]]] = ..., note: _Optional[str] = ..., parts: _Optional[int] = ..., estimated_wrong_rate: _Optional[float] = ..., estimated_ambiguous_rate: _Optional[float] = ..., ambiguous_pairs: _Optional[_Iterable[_Union[ConfusedClassPair, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[_common_pb2.SkippedImage, _Mapping]]] = ...) -> None: ...

class ScoreLabelsEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.JobProgress
    result: ScoreLabelsResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., result: _Optional[_Union[ScoreLabelsResult, _Mapping]] = ...) -> None: ...

class SampleSizeRequest(_message.Message):
    __slots__ = ("source", "fractions", "repeats", "test_fraction", "target_accuracy", "classifier", "seed", "at_sizes")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    AT_SIZES_FIELD_NUMBER: _ClassVar[int]
    source: LabelledSource
    fractions: _containers.RepeatedScalarFieldContainer[float]
    repeats: int
    test_fraction: float
    target_accuracy: float
    classifier: str
    seed: int
    at_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, source: _Optional[_Union[LabelledSource, _Mapping]] = ..., fractions: _Optional[_Iterable[float]] = ..., repeats: _Optional[int] = ..., test_fraction: _Optional[float] = ..., target_accuracy: _Optional[float] = ..., classifier: _Optional[str] = ..., seed: _Optional[int] = ..., at_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class AccuracyAt(_message.Message):
    __slots__ = ("num_images", "accuracy", "low", "high")
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    num_images: int
    accuracy: float
    low: float
    high: float
    def __init__(self, num_images: _Optional[int] = ..., accuracy: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class SweepPoint(_message.Message):
    __slots__ = ("num_images", "mean_accuracy", "std_accuracy", "per_class_accuracy")
    class PerClassAccuracyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MEAN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    STD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    num_images: int
    mean_accuracy: float
    std_accuracy: float
    per_class_accuracy: _containers.ScalarMap[str, float]
    def __init__(self, num_images: _Optional[int] = ..., mean_accuracy: _Optional[float] = ..., std_accuracy: _Optional[float] = ..., per_class_accuracy: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CurveFit(_message.Message):
    __slots__ = ("name", "params", "holdout_error", "ceiling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ERROR_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _containers.RepeatedScalarFieldContainer[float]
    holdout_error: float
    ceiling: float
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Iterable[float]] = ..., holdout_error: _Optional[float] = ..., ceiling: _Optional[float] = ...) -> None: ...

class SampleSizeResult(_message.Message):
    __slots__ = ("points", "fits", "chosen_fit", "target_accuracy", "images_needed", "images_needed_low", "images_needed_high", "answer", "plot_png", "plot_svg", "accuracy_at", "parts", "skipped")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIT_FIELD_NUMBER: _ClassVar[int]
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_NEEDED_LOW_FIELD_NUMBER: _ClassVar[int]
    IMAGES_NEEDED_HIGH_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    PLOT_PNG_FIELD_NUMBER: _ClassVar[int]
    PLOT_SVG_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_AT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[SweepPoint]
    fits: _containers.RepeatedCompositeFieldContainer[CurveFit]
    chosen_fit: str
    target_accuracy: float
    images_needed: float
    images_needed_low: float
    images_needed_high: float
    answer: str
    plot_png: bytes
    plot_svg: str
    accuracy_at: _containers.RepeatedCompositeFieldContainer[AccuracyAt]
    parts: int
    skipped: _containers.RepeatedCompositeFieldContainer[_common_pb2.SkippedImage]
    def __init__(self, points: _Optional[_Iterable[_Union[SweepPoint, _Mapping]]] = ..., fits: _Optional[_Iterable[_Union[CurveFit, _Mapping]]] = ..., chosen_fit: _Optional[str] = ..., target_accuracy: _Optional[float] = ..., images_needed: _Optional[float] = ..., images_needed_low: _Optional[float] = ..., images_needed_high: _Optional[float] = ..., answer: _Optional[str] = ..., plot_png: _Optional[bytes] = ..., plot_svg: _Optional[str] = ..., accuracy_at: _Optional[_Iterable[_Union[AccuracyAt, _Mapping]]] = ..., parts: _Optional[int] = ..., skipped: _Optional[_Iterable[_Union[_common_pb2.SkippedImage, _Mapping]]] = ...) -> None: ...

class SampleSizeEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.JobProgress
    result: SampleSizeResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., result: _Optional[_Union[SampleSizeResult, _Mapping]] = ...) -> None: ...
