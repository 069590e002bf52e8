"""The names the Kubernetes manifests (deploy/k8s) share with the services: one place, so they cannot drift.

Ports, the environment variables a container is given, the files mounted from ConfigMaps and the labels
Prometheus and Grafana select on are written down here once. The manifests repeat them (YAML cannot import
Python); `tests/unit/test_deploy_manifests.py` renders every overlay with `kubectl kustomize` and checks each
containerPort, probe, Service port, environment variable, flag and mounted config file against this module,
and checks this module against the services themselves: every flag is parsed by the service's own argparse
parser, every `SEARCH_*` variable is shown to change the service's `Settings`, every config file is loaded
by the service's own loader.

Nothing here is read at run time; the services keep their own defaults (port 0, loopback host) for local use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Kubernetes version the rendered manifests are validated against (kubernetes-validate --strict).
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
NAMESPACE = "search"
CLUSTER_DOMAIN = "cluster.local"
PART_OF = "neural-search"

# Labels: every workload carries app.kubernetes.io/name=<component> and part-of=neural-search; the
# ServiceMonitor selects Services carrying METRICS_LABEL, the Grafana sidecar ConfigMaps carrying
# GRAFANA_DASHBOARD_LABEL (kube-prometheus-stack's default: grafana_dashboard: "1").
METRICS_LABEL = ("search.example.com/metrics", "true")
# kube-prometheus-stack's Prometheus picks ServiceMonitors and PrometheusRules by its Helm release label.
PROMETHEUS_RELEASE_LABEL = ("release", "kube-prometheus-stack")
GRAFANA_DASHBOARD_LABEL = ("grafana_dashboard", "1")
PROMETHEUS_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
# Prometheus `job` of every scraped pod, from this label under both scrape paths: the ServiceMonitor's
# jobLabel (on the Services) and deploy/prometheus/prometheus.yml's relabelling (on the pods).
JOB_LABEL = "app.kubernetes.io/name"
JOBS = (
    "gateway",
    "retriever-dense",
    "retriever-bm25",
    "reranker",
    "reranker-colbert",
    "reranker-mpnet",
    "triton",
)
METRICS_PATH = "/metrics"

# Port names on containers and Services (probes and the ServiceMonitor refer to them).
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"
HTTP_PORT_NAME = "http"

# Bind every interface inside a pod: the services default to loopback for local runs.
POD_HOST = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class ServiceContract:
    """One of our gRPC services as deployed: its console script, ports and the names it reads."""

    component: str  # app.kubernetes.io/name and container name
    command: str  # console script in pyproject.toml, the image's entrypoint
    grpc_port: int
    metrics_port: int
    env_prefix: str  # the service's config.ENV_PREFIX
    # SEARCH_* variables the manifests set, each read by the service (checked against its Settings).
    env: tuple[str, ...] = ()
    # Other variables on the container, each only there to be substituted into args as $(NAME).
    substitutions: tuple[str, ...] = ()
    # The image it runs, when not its own (neural-search/<component>).
    image: str = ""

    @property
    def image_name(self) -> str:
        return self.image or self.component


GATEWAY = ServiceContract(
    component="gateway",
    command="search-gateway",
    grpc_port=50051,
    metrics_port=9102,
    env_prefix="SEARCH_GATEWAY_",
    # No thread count for the query encoder: on ONNX Runtime (the default) one thread per query is fastest.
)
RETRIEVER = ServiceContract(
    component="retriever",
    command="search-retriever",
    grpc_port=50052,
    metrics_port=9102,
    env_prefix="SEARCH_RETRIEVER_",
    # torch/FAISS threads from the container's CPU limit (downward API).
    env=("SEARCH_RETRIEVER_THREADS",),
    # "<index name>/<version>" from the search-indexes ConfigMap, substituted into --index.
    substitutions=("INDEX_PATH",),
)
RERANKER = ServiceContract(
    component="reranker",
    command="search-reranker",
    grpc_port=50053,
    metrics_port=9102,
    env_prefix="SEARCH_RERANKER_",
    # The Redis password is read from the environment only (never a flag), from the redis-auth Secret.
    env=("SEARCH_RERANKER_REDIS_PASSWORD",),
)


@dataclass(frozen=True, slots=True)
class StoredVectorReranker:
    """A reranker Deployment serving one stored-vector model: the reranker service with `backend`, its
    model and document vectors copied from the data image ("<directory>/<version>" under `key` in both the
    search-models and the search-indexes ConfigMaps), and the variants naming `model` routed to it."""

    contract: ServiceContract
    backend: str
    model: str  # the model name its variants give (gateway reranker_routes)
    key: str


def _stored_vector_contract(component: str) -> ServiceContract:
    return ServiceContract(
        component=component,
        command="search-reranker",
        grpc_port=50053,
        metrics_port=9102,
        env_prefix="SEARCH_RERANKER_",
        env=("SEARCH_RERANKER_REDIS_PASSWORD",),
        substitutions=("MODEL_PATH", "TOKENS_PATH"),
        image="reranker",
    )


STORED_VECTOR_RERANKERS = (
    # ColBERT, trained on the collection's judgements.
    StoredVectorReranker(
        _stored_vector_contract("reranker-colbert"), "late-interaction", "colbert-minilm", "colbert"
    ),
    # all-mpnet-base-v2 as packaged, re-scoring: a corpus without judgements.
    StoredVectorReranker(
        _stored_vector_contract("reranker-mpnet"), "bi-encoder", "all-mpnet-base-v2", "mpnet"
    ),
)
MODEL_MOUNT = "/models"
MODEL_DATA_ROOT = "/data/models"
# The services with an image of their own (deploy/docker/<component>.Dockerfile).
SERVICES = (GATEWAY, RETRIEVER, RERANKER)

# Retriever shards: one Deployment and one headless Service per shard, named retriever-<group>-<shard>.
RETRIEVER_SHARDS: dict[str, int] = {"dense": 2, "bm25": 1}
INDEX_MOUNT = "/indexes"  # --index /indexes/<name>/<version>/shard-<i>
INDEX_DATA_ROOT = "/data/indexes"  # where the index data image holds its files
INDEX_CONFIGMAP = "search-indexes"  # keys: the groups; values: "<name>/<version>"


def shard_name(group: str, shard: int) -> str:
    return f"retriever-{group}-{shard}"


def service_target(name: str, port: int, namespace: str = NAMESPACE) -> str:
    """A gRPC target resolving a headless Service to every ready pod (the gateway balances round_robin)."""
    return f"dns:///{name}.{namespace}.svc.{CLUSTER_DOMAIN}:{port}"


# The gateway's --query-encoder: the dense shards' encoder, which is the one packaged in the images while
# they run without --encoder (gateway.config.PACKAGED_ENCODER); with --encoder PATH it would be that PATH.
QUERY_ENCODER = "packaged"

# The gateway's files, mounted from ConfigMaps.
CONFIG_DIR = "/etc/search"
GATEWAY_CONFIGMAP = "gateway-config"
GATEWAY_CONFIG_KEY = "gateway.yaml"  # gateway.config: retrievers + reranker
VARIANTS_CONFIGMAP = "gateway-variants"
VARIANTS_KEY = "variants.yaml"  # gateway.variants format


@dataclass(frozen=True, slots=True)
class TritonContract:
    component: str = "triton"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    ready_path: str = "/v2/health/ready"
    live_path: str = "/v2/health/live"
    model_repository: str = "/models/repository"
    artifact_mount: str = "/artifacts"
    artifact_data_root: str = "/data/models"
    artifact_configmap: str = "search-models"  # key cross-encoder: "<artifact dir name>/<version>"
    # Where the Triton image keeps the committed triton_models/ (source of the assembled repository).
    model_source: str = "/opt/search/triton_models"
    substitutions: tuple[str, ...] = ("ARTIFACT_PATH",)


TRITON = TritonContract()


@dataclass(frozen=True, slots=True)
class RedisContract:
    component: str = "redis"
    port: int = 6379
    secret: str = "redis-auth"
    secret_key: str = "password"
    configmap: str = "redis-config"
    config_key: str = "redis.conf"
    # The server reads REDIS_PASSWORD into requirepass via stdin; redis-cli (the probe) reads REDISCLI_AUTH.
    env: tuple[str, ...] = ("REDIS_PASSWORD", "REDISCLI_AUTH")
    # redis.conf lines the score cache relies on: bounded memory, LRU eviction, no persistence.
    required_config: dict[str, str] = field(
        default_factory=lambda: {"maxmemory-policy": "allkeys-lru", "save": '""', "appendonly": "no"}
    )


REDIS = RedisContract()
