"""Running and exercising the stack outside the services: nothing here is imported by a service.

Modules:
    demo, demo_config   search-demo: the whole stack on loopback over the stdlib corpus, example queries
    client_cli          search-client: one query to a running gateway, hits, timings and coverage
    processes           start, watch and stop service processes on free ports (demo, tests, benchmarks)
    launch              what the local launchers share: free ports, log tails, stopping, the CLIs' output
    tritonserver        a real tritonserver from .venv-triton (deploy/local/tritonserver.py)
    triton_repository   a runnable Triton model repository assembled from triton_models/ and an artifact
    redis_server        a real redis-server (deploy/local/redis_server.py)
    fault_drill         kills components under load and measures what callers saw
    loadgen             closed-loop load over gRPC: request records, latency percentiles, recovery time
    deploy_contract     the names the Kubernetes manifests share with the services (checked by tests)
"""
