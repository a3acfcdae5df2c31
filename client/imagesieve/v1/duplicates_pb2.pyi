from imagesieve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_UNIQUE: _ClassVar[Verdict]
    VERDICT_NEAR_DUPLICATE: _ClassVar[Verdict]
    VERDICT_EXACT_DUPLICATE: _ClassVar[Verdict]
    VERDICT_ERROR: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_UNIQUE: Verdict
VERDICT_NEAR_DUPLICATE: Verdict
VERDICT_EXACT_DUPLICATE: Verdict
VERDICT_ERROR: Verdict

class CheckDuplicatesRequest(_message.Message):
    __slots__ = ("collection", "images", "k", "threshold", "add_if_unique", "raw_cosine")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ADD_IF_UNIQUE_FIELD_NUMBER: _ClassVar[int]
    RAW_COSINE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    k: int
    threshold: float
    add_if_unique: bool
    raw_cosine: bool
    def __init__(self, collection: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., k: _Optional[int] = ..., threshold: _Optional[float] = ..., add_if_unique: _Optional[bool] = ..., raw_cosine: _Optional[bool] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("key", "cosine", "label", "split", "agreement", "verified", "keypoint_inliers", "matched_blur_px")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_INLIERS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_BLUR_PX_FIELD_NUMBER: _ClassVar[int]
    key: str
    cosine: float
    label: str
    split: str
    agreement: float
    verified: bool
    keypoint_inliers: int
    matched_blur_px: float
    def __init__(self, key: _Optional[str] = ..., cosine: _Optional[float] = ..., label: _Optional[str] = ..., split: _Optional[str] = ..., agreement: _Optional[float] = ..., verified: _Optional[bool] = ..., keypoint_inliers: _Optional[int] = ..., matched_blur_px: _Optional[float] = ...) -> None: ...

class DuplicateCheck(_message.Message):
    __slots__ = ("key", "verdict", "neighbors", "added", "error")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    key: str
    verdict: Verdict
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    added: bool
    error: _common_pb2.ItemError
    def __init__(self, key: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., added: _Optional[bool] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class CheckDuplicatesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DuplicateCheck]
    def __init__(self, results: _Optional[_Iterable[_Union[DuplicateCheck, _Mapping]]] = ...) -> None: ...

class FindDuplicatesRequest(_message.Message):
    __slots__ = ("collection", "threshold", "approximate", "knn_k", "grouping", "raw_cosine")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    KNN_K_FIELD_NUMBER: _ClassVar[int]
    GROUPING_FIELD_NUMBER: _ClassVar[int]
    RAW_COSINE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    threshold: float
    approximate: bool
    knn_k: int
    grouping: str
    raw_cosine: bool
    def __init__(self, collection: _Optional[str] = ..., threshold: _Optional[float] = ..., approximate: _Optional[bool] = ..., knn_k: _Optional[int] = ..., grouping: _Optional[str] = ..., raw_cosine: _Optional[bool] = ...) -> None: ...

class DuplicatePair(_message.Message):
    __slots__ = ("key_a", "key_b", "cosine", "exact", "cross_split", "labels_disagree", "agreement", "matched_area", "mirrored", "turned_degrees", "inverted", "keypoint_inliers", "matched_blur_px")
    KEY_A_FIELD_NUMBER: _ClassVar[int]
    KEY_B_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    CROSS_SPLIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_DISAGREE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_AREA_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    TURNED_DEGREES_FIELD_NUMBER: _ClassVar[int]
    INVERTED_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_INLIERS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_BLUR_PX_FIELD_NUMBER: _ClassVar[int]
    key_a: str
    key_b: str
    cosine: float
    exact: bool
    cross_split: bool
    labels_disagree: bool
    agreement: float
    matched_area: float
    mirrored: bool
    turned_degrees: int
    inverted: bool
    keypoint_inliers: int
    matched_blur_px: float
    def __init__(self, key_a: _Optional[str] = ..., key_b: _Optional[str] = ..., cosine: _Optional[float] = ..., exact: _Optional[bool] = ..., cross_split: _Optional[bool] = ..., labels_disagree: _Optional[bool] = ..., agreement: _Optional[float] = ..., matched_area: _Optional[float] = ..., mirrored: _Optional[bool] = ..., turned_degrees: _Optional[int] = ..., inverted: _Optional[bool] = ..., keypoint_inliers: _Optional[int] = ..., matched_blur_px: _Optional[float] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("keys", "min_internal_cosine")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERNAL_COSINE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    min_internal_cosine: float
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., min_internal_cosine: _Optional[float] = ...) -> None: ...

class FindDuplicatesResult(_message.Message):
    __slots__ = ("pairs", "groups", "num_images", "threshold", "method", "threshold_reason", "warnings", "parts")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_REASON_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[DuplicatePair]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    num_images: int
    threshold: float
    method: str
    threshold_reason: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    parts: int
    def __init__(self, pairs: _Optional[_Iterable[_Union[DuplicatePair, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., num_images: _Optional[int] = ..., threshold: _Optional[float] = ..., method: _Optional[str] = ..., threshold_reason: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., parts: _Optional[int] = ...) -> None: ...

class FindDuplicatesEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.JobProgress
    result: FindDuplicatesResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., result: _Optional[_Union[FindDuplicatesResult, _Mapping]] = ...) -> None: ...
