from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Overflow(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERFLOW_UNSPECIFIED: _ClassVar[Overflow]
    OVERFLOW_ERROR: _ClassVar[Overflow]
    OVERFLOW_TRUNCATE: _ClassVar[Overflow]
    OVERFLOW_SLIDING_WINDOW: _ClassVar[Overflow]
OVERFLOW_UNSPECIFIED: Overflow
OVERFLOW_ERROR: Overflow
OVERFLOW_TRUNCATE: Overflow
OVERFLOW_SLIDING_WINDOW: Overflow

class ScoreTextRequest(_message.Message):
    __slots__ = ("model", "texts", "return_tokens", "top_k", "prepend_bos", "overflow", "stride", "reference", "return_entropy", "min_k", "min_k_percent", "words")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PREPEND_BOS_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    RETURN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MIN_K_FIELD_NUMBER: _ClassVar[int]
    MIN_K_PERCENT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_tokens: bool
    top_k: int
    prepend_bos: bool
    overflow: Overflow
    stride: int
    reference: str
    return_entropy: bool
    min_k: bool
    min_k_percent: float
    words: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., return_tokens: _Optional[bool] = ..., top_k: _Optional[int] = ..., prepend_bos: _Optional[bool] = ..., overflow: _Optional[_Union[Overflow, str]] = ..., stride: _Optional[int] = ..., reference: _Optional[str] = ..., return_entropy: _Optional[bool] = ..., min_k: _Optional[bool] = ..., min_k_percent: _Optional[float] = ..., words: _Optional[bool] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content", "extra")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    extra: _struct_pb2.Struct
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class ScoreChatRequest(_message.Message):
    __slots__ = ("model", "conversations", "score_roles", "include_end_of_turn", "return_tokens", "top_k", "overflow", "stride", "reference", "return_entropy", "min_k", "min_k_percent")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_ROLES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_END_OF_TURN_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    RETURN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MIN_K_FIELD_NUMBER: _ClassVar[int]
    MIN_K_PERCENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    conversations: _containers.RepeatedCompositeFieldContainer[Conversation]
    score_roles: _containers.RepeatedScalarFieldContainer[str]
    include_end_of_turn: bool
    return_tokens: bool
    top_k: int
    overflow: Overflow
    stride: int
    reference: str
    return_entropy: bool
    min_k: bool
    min_k_percent: float
    def __init__(self, model: _Optional[str] = ..., conversations: _Optional[_Iterable[_Union[Conversation, _Mapping]]] = ..., score_roles: _Optional[_Iterable[str]] = ..., include_end_of_turn: _Optional[bool] = ..., return_tokens: _Optional[bool] = ..., top_k: _Optional[int] = ..., overflow: _Optional[_Union[Overflow, str]] = ..., stride: _Optional[int] = ..., reference: _Optional[str] = ..., return_entropy: _Optional[bool] = ..., min_k: _Optional[bool] = ..., min_k_percent: _Optional[float] = ...) -> None: ...

class TopToken(_message.Message):
    __slots__ = ("id", "text", "logprob")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    logprob: float
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., logprob: _Optional[float] = ...) -> None: ...

class TokenScore(_message.Message):
    __slots__ = ("id", "text", "start", "end", "logprob", "rank", "top", "message_index", "scored", "entropy")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    start: int
    end: int
    logprob: float
    rank: int
    top: _containers.RepeatedCompositeFieldContainer[TopToken]
    message_index: int
    scored: bool
    entropy: float
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., logprob: _Optional[float] = ..., rank: _Optional[int] = ..., top: _Optional[_Iterable[_Union[TopToken, _Mapping]]] = ..., message_index: _Optional[int] = ..., scored: _Optional[bool] = ..., entropy: _Optional[float] = ...) -> None: ...

class WordScore(_message.Message):
    __slots__ = ("text", "start", "end", "num_tokens", "logprob", "logprob_corrected", "surprisal_bits")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    SURPRISAL_BITS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: int
    end: int
    num_tokens: int
    logprob: float
    logprob_corrected: float
    surprisal_bits: float
    def __init__(self, text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., num_tokens: _Optional[int] = ..., logprob: _Optional[float] = ..., logprob_corrected: _Optional[float] = ..., surprisal_bits: _Optional[float] = ...) -> None: ...

class MessageScore(_message.Message):
    __slots__ = ("index", "role", "scored", "num_scored_tokens", "sum_logprob", "mean_nll", "ppl")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    NUM_SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MEAN_NLL_FIELD_NUMBER: _ClassVar[int]
    PPL_FIELD_NUMBER: _ClassVar[int]
    index: int
    role: str
    scored: bool
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float
    ppl: float
    def __init__(self, index: _Optional[int] = ..., role: _Optional[str] = ..., scored: _Optional[bool] = ..., num_scored_tokens: _Optional[int] = ..., sum_logprob: _Optional[float] = ..., mean_nll: _Optional[float] = ..., ppl: _Optional[float] = ...) -> None: ...

class TextResult(_message.Message):
    __slots__ = ("num_tokens", "num_scored_tokens", "sum_logprob", "mean_nll", "ppl", "bits_per_byte", "bits_per_char", "truncated", "tokens", "messages", "percentile", "is_outlier", "mean_entropy", "entropy_bits_per_char", "min_k_logprob", "min_k_plus_plus", "words")
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MEAN_NLL_FIELD_NUMBER: _ClassVar[int]
    PPL_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_BYTE_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    IS_OUTLIER_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    MIN_K_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MIN_K_PLUS_PLUS_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float
    ppl: float
    bits_per_byte: float
    bits_per_char: float
    truncated: bool
    tokens: _containers.RepeatedCompositeFieldContainer[TokenScore]
    messages: _containers.RepeatedCompositeFieldContainer[MessageScore]
    percentile: float
    is_outlier: bool
    mean_entropy: float
    entropy_bits_per_char: float
    min_k_logprob: float
    min_k_plus_plus: float
    words: _containers.RepeatedCompositeFieldContainer[WordScore]
    def __init__(self, num_tokens: _Optional[int] = ..., num_scored_tokens: _Optional[int] = ..., sum_logprob: _Optional[float] = ..., mean_nll: _Optional[float] = ..., ppl: _Optional[float] = ..., bits_per_byte: _Optional[float] = ..., bits_per_char: _Optional[float] = ..., truncated: _Optional[bool] = ..., tokens: _Optional[_Iterable[_Union[TokenScore, _Mapping]]] = ..., messages: _Optional[_Iterable[_Union[MessageScore, _Mapping]]] = ..., percentile: _Optional[float] = ..., is_outlier: _Optional[bool] = ..., mean_entropy: _Optional[float] = ..., entropy_bits_per_char: _Optional[float] = ..., min_k_logprob: _Optional[float] = ..., min_k_plus_plus: _Optional[float] = ..., words: _Optional[_Iterable[_Union[WordScore, _Mapping]]] = ...) -> None: ...

class Aggregate(_message.Message):
    __slots__ = ("num_scored_tokens", "sum_logprob", "mean_nll", "ppl")
    NUM_SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MEAN_NLL_FIELD_NUMBER: _ClassVar[int]
    PPL_FIELD_NUMBER: _ClassVar[int]
    num_scored_tokens: int
    sum_logprob: float
    mean_nll: float
    ppl: float
    def __init__(self, num_scored_tokens: _Optional[int] = ..., sum_logprob: _Optional[float] = ..., mean_nll: _Optional[float] = ..., ppl: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens",)
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ...) -> None: ...

class ScoreTextResponse(_message.Message):
    __slots__ = ("model", "model_revision", "results", "aggregate", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_revision: str
    results: _containers.RepeatedCompositeFieldContainer[TextResult]
    aggregate: Aggregate
    usage: Usage
    def __init__(self, model: _Optional[str] = ..., model_revision: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TextResult, _Mapping]]] = ..., aggregate: _Optional[_Union[Aggregate, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ScoreChatResponse(_message.Message):
    __slots__ = ("model", "model_revision", "results", "aggregate", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_revision: str
    results: _containers.RepeatedCompositeFieldContainer[TextResult]
    aggregate: Aggregate
    usage: Usage
    def __init__(self, model: _Optional[str] = ..., model_revision: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TextResult, _Mapping]]] = ..., aggregate: _Optional[_Union[Aggregate, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelCard(_message.Message):
    __slots__ = ("id", "object", "backend", "dtype", "device", "max_context", "revision", "has_chat_template", "created", "owned_by", "compiled")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    COMPILED_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    backend: str
    dtype: str
    device: str
    max_context: int
    revision: str
    has_chat_template: bool
    created: int
    owned_by: str
    compiled: bool
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., backend: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., max_context: _Optional[int] = ..., revision: _Optional[str] = ..., has_chat_template: _Optional[bool] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ..., compiled: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    data: _containers.RepeatedCompositeFieldContainer[ModelCard]
    def __init__(self, object: _Optional[str] = ..., data: _Optional[_Iterable[_Union[ModelCard, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListReferencesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReferenceCard(_message.Message):
    __slots__ = ("name", "model", "revision", "metric", "threshold", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    revision: str
    metric: str
    threshold: float
    count: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., revision: _Optional[str] = ..., metric: _Optional[str] = ..., threshold: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ListReferencesResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    data: _containers.RepeatedCompositeFieldContainer[ReferenceCard]
    def __init__(self, object: _Optional[str] = ..., data: _Optional[_Iterable[_Union[ReferenceCard, _Mapping]]] = ...) -> None: ...

class ScoreContinuationsRequest(_message.Message):
    __slots__ = ("model", "context", "continuations", "return_tokens", "prepend_bos")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONTINUATIONS_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREPEND_BOS_FIELD_NUMBER: _ClassVar[int]
    model: str
    context: str
    continuations: _containers.RepeatedScalarFieldContainer[str]
    return_tokens: bool
    prepend_bos: bool
    def __init__(self, model: _Optional[str] = ..., context: _Optional[str] = ..., continuations: _Optional[_Iterable[str]] = ..., return_tokens: _Optional[bool] = ..., prepend_bos: _Optional[bool] = ...) -> None: ...

class ContinuationToken(_message.Message):
    __slots__ = ("id", "text", "logprob", "rank")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    logprob: float
    rank: int
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., logprob: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class ContinuationResult(_message.Message):
    __slots__ = ("continuation", "num_tokens", "sum_logprob", "is_greedy", "tokens")
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    IS_GREEDY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    continuation: str
    num_tokens: int
    sum_logprob: float
    is_greedy: bool
    tokens: _containers.RepeatedCompositeFieldContainer[ContinuationToken]
    def __init__(self, continuation: _Optional[str] = ..., num_tokens: _Optional[int] = ..., sum_logprob: _Optional[float] = ..., is_greedy: _Optional[bool] = ..., tokens: _Optional[_Iterable[_Union[ContinuationToken, _Mapping]]] = ...) -> None: ...

class ScoreContinuationsResponse(_message.Message):
    __slots__ = ("model", "model_revision", "context_tokens", "results", "usage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_revision: str
    context_tokens: int
    results: _containers.RepeatedCompositeFieldContainer[ContinuationResult]
    usage: Usage
    def __init__(self, model: _Optional[str] = ..., model_revision: _Optional[str] = ..., context_tokens: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ContinuationResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class CompareModelsRequest(_message.Message):
    __slots__ = ("models", "texts", "token_level", "return_tokens")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    texts: _containers.RepeatedScalarFieldContainer[str]
    token_level: bool
    return_tokens: bool
    def __init__(self, models: _Optional[_Iterable[str]] = ..., texts: _Optional[_Iterable[str]] = ..., token_level: _Optional[bool] = ..., return_tokens: _Optional[bool] = ...) -> None: ...

class ModelScores(_message.Message):
    __slots__ = ("model", "num_tokens", "num_scored_tokens", "sum_logprob", "ppl", "bits_per_byte", "bits_per_char")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    PPL_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_BYTE_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    model: str
    num_tokens: int
    num_scored_tokens: int
    sum_logprob: float
    ppl: float
    bits_per_byte: float
    bits_per_char: float
    def __init__(self, model: _Optional[str] = ..., num_tokens: _Optional[int] = ..., num_scored_tokens: _Optional[int] = ..., sum_logprob: _Optional[float] = ..., ppl: _Optional[float] = ..., bits_per_byte: _Optional[float] = ..., bits_per_char: _Optional[float] = ...) -> None: ...

class CompareToken(_message.Message):
    __slots__ = ("id", "text", "kl", "agree")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    kl: float
    agree: bool
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., kl: _Optional[float] = ..., agree: _Optional[bool] = ...) -> None: ...

class CompareResult(_message.Message):
    __slots__ = ("scores", "bits_per_byte_ratio", "kl_divergence", "top1_agreement", "binoculars", "tokens")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_BYTE_RATIO_FIELD_NUMBER: _ClassVar[int]
    KL_DIVERGENCE_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    BINOCULARS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ModelScores]
    bits_per_byte_ratio: float
    kl_divergence: float
    top1_agreement: float
    binoculars: float
    tokens: _containers.RepeatedCompositeFieldContainer[CompareToken]
    def __init__(self, scores: _Optional[_Iterable[_Union[ModelScores, _Mapping]]] = ..., bits_per_byte_ratio: _Optional[float] = ..., kl_divergence: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., binoculars: _Optional[float] = ..., tokens: _Optional[_Iterable[_Union[CompareToken, _Mapping]]] = ...) -> None: ...

class CompareModelsResponse(_message.Message):
    __slots__ = ("models", "same_tokenizer", "results", "usage")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SAME_TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    same_tokenizer: bool
    results: _containers.RepeatedCompositeFieldContainer[CompareResult]
    usage: Usage
    def __init__(self, models: _Optional[_Iterable[str]] = ..., same_tokenizer: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[CompareResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
