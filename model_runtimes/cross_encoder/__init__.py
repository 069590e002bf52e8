"""Cross-encoder inference over an artifact, shared by the reranker and the Triton model.

Modules, in the order they depend on each other:
    contract     file and tensor names, engine names, array types, the `BatchForward` port of an engine
    manifest     the artifact's manifest, read and checked; which engine `auto` means here
    pairs        pure helpers: length order, padding, a Triton request's pairs decoded and split back
    passes       how pairs become forward passes so that a pair's score depends on nothing else
    onnx_engine  ONNX Runtime over `model.onnx` (CPU, or its CUDA provider)
    torch_engine the artifact's `torch.export` program (bfloat16; CPU or CUDA)
    runtime      `CrossEncoderRuntime`: tokenise, plan passes, run them on the engine, scores in input order
"""
