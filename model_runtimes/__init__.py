"""The model runtimes every serving process shares: what turns a model artifact into scores or vectors.

Used by the reranker and the Triton model (the cross-encoder), the retriever and the gateway (the
bi-encoder and its ONNX query encoder). Imports only the shared runtime (`search_common`) and the numeric
libraries; never a service, training, tooling or bench.

Modules:
    cross_encoder/   the cross-encoder: artifact contract and manifest, pass shapes that keep a pair's score
                     its own, the ONNX and torch-program engines, and `CrossEncoderRuntime` over them
    bi_encoder       the bi-encoder (sentence-transformers layout): documents and queries to vectors
    query_encoder_onnx  the bi-encoder's query side on ONNX Runtime, exported in memory and checked at start
    hardware         what this machine runs fast: the CPU's instruction sets (AMX, AVX512-BF16, VNNI) and a
                     CUDA GPU, for the engine choice and beside every speed figure
"""
