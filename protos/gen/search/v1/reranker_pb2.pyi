from search.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "model", "max_sequence_length", "use_cache")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    USE_CACHE_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    model: str
    max_sequence_length: int
    use_cache: bool
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ..., model: _Optional[str] = ..., max_sequence_length: _Optional[int] = ..., use_cache: _Optional[bool] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("scores", "model", "cache_hits", "timings", "cache_bypassed")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYPASSED_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model: _common_pb2.ArtifactVersion
    cache_hits: int
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    cache_bypassed: bool
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., model: _Optional[_Union[_common_pb2.ArtifactVersion, _Mapping]] = ..., cache_hits: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., cache_bypassed: _Optional[bool] = ...) -> None: ...
