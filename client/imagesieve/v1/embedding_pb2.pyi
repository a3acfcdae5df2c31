from imagesieve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("images", "top_k_classes", "with_layout_signature")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_CLASSES_FIELD_NUMBER: _ClassVar[int]
    WITH_LAYOUT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    top_k_classes: int
    with_layout_signature: bool
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., top_k_classes: _Optional[int] = ..., with_layout_signature: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "name", "probability")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    probability: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("key", "vector", "error", "top_classes", "width", "height", "layout_signature", "image_properties")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOP_CLASSES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    key: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    error: _common_pb2.ItemError
    top_classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    width: int
    height: int
    layout_signature: bytes
    image_properties: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, key: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., top_classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., layout_signature: _Optional[bytes] = ..., image_properties: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "dim", "input_size", "layout", "normalization", "source", "licence", "sha256", "providers", "max_batch_size", "num_classes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    input_size: int
    layout: str
    normalization: str
    source: str
    licence: str
    sha256: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    max_batch_size: int
    num_classes: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., input_size: _Optional[int] = ..., layout: _Optional[str] = ..., normalization: _Optional[str] = ..., source: _Optional[str] = ..., licence: _Optional[str] = ..., sha256: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., max_batch_size: _Optional[int] = ..., num_classes: _Optional[int] = ...) -> None: ...
