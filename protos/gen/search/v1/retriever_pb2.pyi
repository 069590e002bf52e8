from search.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieverKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVER_KIND_UNSPECIFIED: _ClassVar[RetrieverKind]
    RETRIEVER_KIND_DENSE: _ClassVar[RetrieverKind]
    RETRIEVER_KIND_BM25: _ClassVar[RetrieverKind]
RETRIEVER_KIND_UNSPECIFIED: RetrieverKind
RETRIEVER_KIND_DENSE: RetrieverKind
RETRIEVER_KIND_BM25: RetrieverKind

class RetrieveRequest(_message.Message):
    __slots__ = ("query", "top_k", "query_embedding", "include_vectors", "kind")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    QUERY_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    query_embedding: QueryEmbedding
    include_vectors: bool
    kind: RetrieverKind
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., query_embedding: _Optional[_Union[QueryEmbedding, _Mapping]] = ..., include_vectors: _Optional[bool] = ..., kind: _Optional[_Union[RetrieverKind, str]] = ...) -> None: ...

class QueryEmbedding(_message.Message):
    __slots__ = ("values", "encoder")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    encoder: str
    def __init__(self, values: _Optional[_Iterable[float]] = ..., encoder: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("document", "score", "vector")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    document: _common_pb2.Document
    score: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., score: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "shard", "timings", "searched")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    shard: ShardInfo
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    searched: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., shard: _Optional[_Union[ShardInfo, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., searched: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ...) -> None: ...

class GetShardInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: RetrieverKind
    def __init__(self, kind: _Optional[_Union[RetrieverKind, str]] = ...) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("kind", "shard_id", "num_shards", "index", "encoder", "num_documents")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    kind: RetrieverKind
    shard_id: int
    num_shards: int
    index: _common_pb2.ArtifactVersion
    encoder: str
    num_documents: int
    def __init__(self, kind: _Optional[_Union[RetrieverKind, str]] = ..., shard_id: _Optional[int] = ..., num_shards: _Optional[int] = ..., index: _Optional[_Union[_common_pb2.ArtifactVersion, _Mapping]] = ..., encoder: _Optional[str] = ..., num_documents: _Optional[int] = ...) -> None: ...
