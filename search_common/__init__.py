"""The shared runtime: what every serving process needs at serve time, and nothing else.

Domain types (documents, corpus_file), ports, errors, artifacts and manifests, gRPC plumbing (grpc_server,
tls, hot_swap, port_file), logging, variant labels, and the tensor names Triton's model shares with its client
(triton_contract); and protogen, which regenerates that API (`make protos`). Imports nothing of the project
but the generated API (protos/gen).
"""
