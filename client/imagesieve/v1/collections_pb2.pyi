from imagesieve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_KIND_AUTO: _ClassVar[IndexKind]
    INDEX_KIND_FLAT_IP: _ClassVar[IndexKind]
    INDEX_KIND_IVF_FLAT_IP: _ClassVar[IndexKind]
    INDEX_KIND_IVF_PQ_IP: _ClassVar[IndexKind]
    INDEX_KIND_HNSW_IP: _ClassVar[IndexKind]
INDEX_KIND_AUTO: IndexKind
INDEX_KIND_FLAT_IP: IndexKind
INDEX_KIND_IVF_FLAT_IP: IndexKind
INDEX_KIND_IVF_PQ_IP: IndexKind
INDEX_KIND_HNSW_IP: IndexKind

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "index_kind", "near_duplicate_threshold", "exist_ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    index_kind: IndexKind
    near_duplicate_threshold: float
    exist_ok: bool
    def __init__(self, name: _Optional[str] = ..., index_kind: _Optional[_Union[IndexKind, str]] = ..., near_duplicate_threshold: _Optional[float] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "num_images", "dim", "model", "index_kind", "near_duplicate_threshold", "images_per_label", "images_per_split", "index_bytes", "last_snapshot_unix_s", "load_error", "distinct_labels", "distinct_splits")
    class ImagesPerLabelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ImagesPerSplitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SPLIT_FIELD_NUMBER: _ClassVar[int]
    INDEX_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_LABELS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_SPLITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_images: int
    dim: int
    model: str
    index_kind: IndexKind
    near_duplicate_threshold: float
    images_per_label: _containers.ScalarMap[str, int]
    images_per_split: _containers.ScalarMap[str, int]
    index_bytes: int
    last_snapshot_unix_s: float
    load_error: str
    distinct_labels: int
    distinct_splits: int
    def __init__(self, name: _Optional[str] = ..., num_images: _Optional[int] = ..., dim: _Optional[int] = ..., model: _Optional[str] = ..., index_kind: _Optional[_Union[IndexKind, str]] = ..., near_duplicate_threshold: _Optional[float] = ..., images_per_label: _Optional[_Mapping[str, int]] = ..., images_per_split: _Optional[_Mapping[str, int]] = ..., index_bytes: _Optional[int] = ..., last_snapshot_unix_s: _Optional[float] = ..., load_error: _Optional[str] = ..., distinct_labels: _Optional[int] = ..., distinct_splits: _Optional[int] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCollectionStatsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class SnapshotCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SnapshotCollectionResponse(_message.Message):
    __slots__ = ("path", "num_images")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    path: str
    num_images: int
    def __init__(self, path: _Optional[str] = ..., num_images: _Optional[int] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("collection", "images", "skip_exact_duplicates")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SKIP_EXACT_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    skip_exact_duplicates: bool
    def __init__(self, collection: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., skip_exact_duplicates: _Optional[bool] = ...) -> None: ...

class AddResult(_message.Message):
    __slots__ = ("key", "id", "added", "exact_duplicate_of", "error")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    EXACT_DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    key: str
    id: int
    added: bool
    exact_duplicate_of: str
    error: _common_pb2.ItemError
    def __init__(self, key: _Optional[str] = ..., id: _Optional[int] = ..., added: _Optional[bool] = ..., exact_duplicate_of: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class AddImagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AddResult, _Mapping]]] = ...) -> None: ...

class RemoveImagesRequest(_message.Message):
    __slots__ = ("collection", "keys")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveImagesResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...
