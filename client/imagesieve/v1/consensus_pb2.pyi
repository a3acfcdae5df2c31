from imagesieve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Annotation(_message.Message):
    __slots__ = ("key", "annotator", "label")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    key: str
    annotator: str
    label: str
    def __init__(self, key: _Optional[str] = ..., annotator: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class AddAnnotationsRequest(_message.Message):
    __slots__ = ("collection", "annotations")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    annotations: _containers.RepeatedCompositeFieldContainer[Annotation]
    def __init__(self, collection: _Optional[str] = ..., annotations: _Optional[_Iterable[_Union[Annotation, _Mapping]]] = ...) -> None: ...

class AddAnnotationsResponse(_message.Message):
    __slots__ = ("stored", "errors", "error_indices")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_INDICES_FIELD_NUMBER: _ClassVar[int]
    stored: int
    errors: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemError]
    error_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, stored: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[_common_pb2.ItemError, _Mapping]]] = ..., error_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class ConsensusRequest(_message.Message):
    __slots__ = ("collection", "method", "no_model", "seed")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NO_MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    method: str
    no_model: bool
    seed: int
    def __init__(self, collection: _Optional[str] = ..., method: _Optional[str] = ..., no_model: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class ImageConsensus(_message.Message):
    __slots__ = ("key", "consensus", "quality", "agreement", "num_labels", "labels", "model_label", "review_rank")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LABEL_FIELD_NUMBER: _ClassVar[int]
    REVIEW_RANK_FIELD_NUMBER: _ClassVar[int]
    key: str
    consensus: str
    quality: float
    agreement: float
    num_labels: int
    labels: _containers.ScalarMap[str, str]
    model_label: str
    review_rank: int
    def __init__(self, key: _Optional[str] = ..., consensus: _Optional[str] = ..., quality: _Optional[float] = ..., agreement: _Optional[float] = ..., num_labels: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., model_label: _Optional[str] = ..., review_rank: _Optional[int] = ...) -> None: ...

class AnnotatorReliability(_message.Message):
    __slots__ = ("annotator", "num_labels", "agreement_with_consensus", "estimated_accuracy")
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_WITH_CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    annotator: str
    num_labels: int
    agreement_with_consensus: float
    estimated_accuracy: float
    def __init__(self, annotator: _Optional[str] = ..., num_labels: _Optional[int] = ..., agreement_with_consensus: _Optional[float] = ..., estimated_accuracy: _Optional[float] = ...) -> None: ...

class AmbiguousClassPair(_message.Message):
    __slots__ = ("class_a", "class_b", "score", "suggestion")
    CLASS_A_FIELD_NUMBER: _ClassVar[int]
    CLASS_B_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    class_a: str
    class_b: str
    score: float
    suggestion: str
    def __init__(self, class_a: _Optional[str] = ..., class_b: _Optional[str] = ..., score: _Optional[float] = ..., suggestion: _Optional[str] = ...) -> None: ...

class ConsensusResult(_message.Message):
    __slots__ = ("images", "annotators", "krippendorff_alpha", "pairs", "method", "review_queue", "parts")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ANNOTATORS_FIELD_NUMBER: _ClassVar[int]
    KRIPPENDORFF_ALPHA_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REVIEW_QUEUE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageConsensus]
    annotators: _containers.RepeatedCompositeFieldContainer[AnnotatorReliability]
    krippendorff_alpha: float
    pairs: _containers.RepeatedCompositeFieldContainer[AmbiguousClassPair]
    method: str
    review_queue: _containers.RepeatedScalarFieldContainer[str]
    parts: int
    def __init__(self, images: _Optional[_Iterable[_Union[ImageConsensus, _Mapping]]] = ..., annotators: _Optional[_Iterable[_Union[AnnotatorReliability, _Mapping]]] = ..., krippendorff_alpha: _Optional[float] = ..., pairs: _Optional[_Iterable[_Union[AmbiguousClassPair, _Mapping]]] = ..., method: _Optional[str] = ..., review_queue: _Optional[_Iterable[str]] = ..., parts: _Optional[int] = ...) -> None: ...

class ConsensusEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.JobProgress
    result: ConsensusResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., result: _Optional[_Union[ConsensusResult, _Mapping]] = ...) -> None: ...
