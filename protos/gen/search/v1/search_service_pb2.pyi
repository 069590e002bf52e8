from search.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_RETRIEVE: _ClassVar[Stage]
    STAGE_RERANK: _ClassVar[Stage]

class DegradationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEGRADATION_REASON_UNSPECIFIED: _ClassVar[DegradationReason]
    DEGRADATION_REASON_DEADLINE_EXCEEDED: _ClassVar[DegradationReason]
    DEGRADATION_REASON_UNAVAILABLE: _ClassVar[DegradationReason]
    DEGRADATION_REASON_ERROR: _ClassVar[DegradationReason]
    DEGRADATION_REASON_CACHE_BYPASSED: _ClassVar[DegradationReason]
    DEGRADATION_REASON_OVERLOADED: _ClassVar[DegradationReason]
STAGE_UNSPECIFIED: Stage
STAGE_RETRIEVE: Stage
STAGE_RERANK: Stage
DEGRADATION_REASON_UNSPECIFIED: DegradationReason
DEGRADATION_REASON_DEADLINE_EXCEEDED: DegradationReason
DEGRADATION_REASON_UNAVAILABLE: DegradationReason
DEGRADATION_REASON_ERROR: DegradationReason
DEGRADATION_REASON_CACHE_BYPASSED: DegradationReason
DEGRADATION_REASON_OVERLOADED: DegradationReason

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "variant", "caller_key", "overrides")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    CALLER_KEY_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    variant: str
    caller_key: str
    overrides: SearchOverrides
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., variant: _Optional[str] = ..., caller_key: _Optional[str] = ..., overrides: _Optional[_Union[SearchOverrides, _Mapping]] = ...) -> None: ...

class SearchOverrides(_message.Message):
    __slots__ = ("retrieval_depth", "rerank_depth")
    RETRIEVAL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RERANK_DEPTH_FIELD_NUMBER: _ClassVar[int]
    retrieval_depth: int
    rerank_depth: int
    def __init__(self, retrieval_depth: _Optional[int] = ..., rerank_depth: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("doc_id", "title", "snippet", "score", "retrieval_score", "rerank_score", "rank")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    title: str
    snippet: str
    score: float
    retrieval_score: float
    rerank_score: float
    rank: int
    def __init__(self, doc_id: _Optional[str] = ..., title: _Optional[str] = ..., snippet: _Optional[str] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., rerank_score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "metadata")
    HITS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    metadata: ResponseMetadata
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., metadata: _Optional[_Union[ResponseMetadata, _Mapping]] = ...) -> None: ...

class ResponseMetadata(_message.Message):
    __slots__ = ("variant", "versions", "timings", "coverage")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    variant: str
    versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ArtifactVersion]
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    coverage: Coverage
    def __init__(self, variant: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[_common_pb2.ArtifactVersion, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., coverage: _Optional[_Union[Coverage, _Mapping]] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("degraded", "degradations", "shards_queried", "shards_answered")
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADATIONS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
    degraded: bool
    degradations: _containers.RepeatedCompositeFieldContainer[Degradation]
    shards_queried: int
    shards_answered: int
    def __init__(self, degraded: _Optional[bool] = ..., degradations: _Optional[_Iterable[_Union[Degradation, _Mapping]]] = ..., shards_queried: _Optional[int] = ..., shards_answered: _Optional[int] = ...) -> None: ...

class Degradation(_message.Message):
    __slots__ = ("stage", "reason", "detail", "component")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    reason: DegradationReason
    detail: str
    component: str
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., reason: _Optional[_Union[DegradationReason, str]] = ..., detail: _Optional[str] = ..., component: _Optional[str] = ...) -> None: ...
