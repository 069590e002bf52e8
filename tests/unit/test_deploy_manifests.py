"""The Kubernetes manifests (deploy/k8s) render, validate, and agree with the services they deploy.

Every overlay is rendered with the real `kubectl kustomize`; the output is validated with kubernetes-validate
in strict mode for each version in `deploy_contract.KUBERNETES_VERSIONS`. Custom resources (the
ServiceMonitor) have no schema there, so their shape is checked here explicitly, and any other kind without
a schema fails the test rather than passing silently.

The names test: `operations.deploy_contract` is the one place ports, env vars, files and labels are
written down. Each service container's args are parsed by that service's own parser, with the container's
environment (ConfigMap values, Secret placeholders, resource limits) and its mounted ConfigMap files written
to a temporary folder in place of the mount, so a misspelt flag, an env var the service never reads, a bad
gateway.yaml key or an invalid variants file fails here, as would a containerPort, probe, Service port,
annotation or ServiceMonitor that disagrees with the port the service actually binds.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway import config as gateway_config
from gateway.variants import load_variants
from operations import deploy_contract as dc
from operations import triton_repository as triton_repository
from reranker_service import config as reranker_config
from retriever_service import config as retriever_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKER = REPO / "deploy" / "docker"
OVERLAYS = ("cpu", "gpu")
# Kinds without a schema in kubernetes-validate, checked by hand below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
RULES = REPO / "deploy" / "prometheus" / "rules"
GRAFANA = REPO / "deploy" / "grafana"
IMAGE_PREFIX = "neural-search/"

Doc = dict[str, Any]

# --- rendering --------------------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: these tests render the overlays with `kubectl kustomize`")
    return kubectl


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RENDERED: dict[str, list[Doc]] = {}


def render(overlay: str) -> list[Doc]:
    if overlay not in _RENDERED:
        result = subprocess.run(
            [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
        _RENDERED[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _RENDERED[overlay]


@pytest.fixture(scope="module")
def docs(overlay: str) -> list[Doc]:
    return render(overlay)


def of_kind(docs: Sequence[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: Sequence[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: Doc, name: str) -> Doc:
    found: list[Doc] = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']} has no container {name}"
    return found[0]


def init_container(deployment: Doc, name: str) -> Doc:
    found: list[Doc] = [c for c in pod_spec(deployment).get("initContainers", []) if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']} has no init container {name}"
    return found[0]


def port(c: Doc, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert name in ports, f"container {c['name']} has no port named {name}"
    return int(ports[name])


def image_name(c: Doc) -> str:
    """The image without tag and registry: "neural-search/<name>" however an overlay relocates it."""
    name = str(c["image"]).rsplit(":", 1)[0]
    return name[name.index(IMAGE_PREFIX) :] if IMAGE_PREFIX in name else name


def configmap_data(docs: Sequence[Doc], name: str) -> dict[str, str]:
    """The data of a generated ConfigMap, found by its name before kustomize's hash suffix."""
    found = [
        d
        for d in of_kind(docs, "ConfigMap")
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one ConfigMap {name}, found {len(found)}"
    data: dict[str, str] = found[0].get("data", {})
    return data


def unhashed(name: str) -> str:
    return re.sub(r"-[a-z0-9]{10}$", "", name)


# --- what a container sees: env values, $(VAR) substitution, mounted ConfigMap files ------------------------


def env_values(docs: Sequence[Doc], c: Doc) -> dict[str, str]:
    """Container env as the kubelet would resolve it (Secrets become a recognisable placeholder)."""
    values: dict[str, str] = {}
    for entry in c.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[entry["name"]] = configmap_data(docs, unhashed(ref["name"]))[ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            values[entry["name"]] = f"secret:{ref['name']}/{ref['key']}"
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu", f"unexpected resourceFieldRef {ref}"
            assert ref["containerName"] == c["name"]
            values[entry["name"]] = str(math.ceil(_cpu(c["resources"]["limits"]["cpu"])))
        else:
            pytest.fail(f"container {c['name']}: unsupported env source {source}")
    return values


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def substitute(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in args; an undefined reference is a test failure here."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"args reference $({name}), which the container's env does not define"
        return env[name]

    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg) for arg in args]


def mounted_files(docs: Sequence[Doc], deployment: Doc, c: Doc, root: Path) -> dict[str, Path]:
    """Writes the ConfigMap files mounted into `c` under root; maps each mount path to its copy."""
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    mapping: dict[str, Path] = {}
    for mount in c.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        sources = [volume["configMap"]] if "configMap" in volume else []
        sources += [
            s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s
        ]
        if not sources:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            for key, text in configmap_data(docs, unhashed(source["name"])).items():
                (target / key).write_text(text)
        mapping[mount["mountPath"]] = target
    return mapping


def relocate(args: Sequence[str], files: Mapping[str, Path]) -> list[str]:
    out = []
    for arg in args:
        for mount, copy in files.items():
            arg = arg.replace(f"={mount}/", f"={copy}/")
        out.append(arg)
    return out


def accepted_flags(parse: Callable[[list[str]], object]) -> set[str]:
    """Every option string the parser defines, read from its --help (argparse would accept abbreviations)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse(["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", out.getvalue()))


def check_flags(args: Sequence[str], parse: Callable[[list[str]], object], where: str) -> None:
    known = accepted_flags(parse)
    for arg in args:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in known, f"{where}: {flag} is not a flag of the service (known: {sorted(known)})"


def parse_or_fail(parse: Callable[[], Any], where: str) -> Any:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse()
    except SystemExit:
        pytest.fail(f"{where}: the service refuses its args/env: {err.getvalue().strip()}")


def check_env(c: Doc, contract: dc.ServiceContract, args: Sequence[str]) -> None:
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"{c['name']}: duplicate env vars {names}"
    for name in names:
        assert name in contract.env or name in contract.substitutions, (
            f"{c['name']}: env {name} is not in deploy_contract (env or substitutions)"
        )
    for name in contract.env:
        assert name.startswith(contract.env_prefix), f"{name} lacks the prefix {contract.env_prefix}"
        assert name in names, f"{c['name']}: contract env {name} is not set"
    for name in contract.substitutions:
        assert name in names and any(f"$({name})" in a for a in args), (
            f"{c['name']}: {name} should be defined and used as $({name}) in args"
        )


def env_changes_settings(
    parse: Callable[[list[str], Mapping[str, str]], object],
    args: list[str],
    env: Mapping[str, str],
    name: str,
) -> None:
    """The service reads `name`: its Settings differ with and without it."""
    without = {k: v for k, v in env.items() if k != name}
    assert parse(args, env) != parse(args, without), f"the service ignores env {name}"


# --- kubernetes-validate, CRDs, yamllint --------------------------------------------------------------------


@pytest.mark.parametrize("version", dc.KUBERNETES_VERSIONS)
def test_core_objects_validate_strictly(docs: list[Doc], version: str) -> None:
    checked = 0
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{key} has no schema for {version}; add it to CUSTOM_KINDS with its own checks")
        checked += 1
    assert checked >= 20


def test_cli_validates_rendered_output(overlay: str, tmp_path: Path) -> None:
    """The same check through the CLI the README shows (it only warns about the CRD)."""
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    for version in dc.KUBERNETES_VERSIONS:
        result = subprocess.run(
            [str(cli), "--strict", "--quiet", "-k", version, str(rendered)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ERROR" not in result.stdout


def test_servicemonitor_shape(docs: list[Doc]) -> None:
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == dc.NAMESPACE
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    key, value = dc.METRICS_LABEL
    assert spec["selector"] == {"matchLabels": {key: value}}
    assert spec["namespaceSelector"] == {"matchNames": [dc.NAMESPACE]}
    assert spec["jobLabel"] == dc.JOB_LABEL
    release, name = dc.PROMETHEUS_RELEASE_LABEL
    assert monitor["metadata"]["labels"][release] == name
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == dc.METRICS_PORT_NAME and endpoint["path"] == dc.METRICS_PATH
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])
    # Every Service it selects has a port of that name, and every Service with such a port is selected.
    for service in of_kind(docs, "Service"):
        labelled = service["metadata"].get("labels", {}).get(key) == value
        has_port = any(p["name"] == dc.METRICS_PORT_NAME for p in service["spec"]["ports"])
        assert labelled == has_port, f"Service {service['metadata']['name']}: metrics label vs port"
        if labelled:
            assert service["metadata"]["labels"][dc.JOB_LABEL] in dc.JOBS
    # The annotation-scraped pods get the same jobs (deploy/prometheus/prometheus.yml relabels from the pod).
    jobs = set()
    for deployment in of_kind(docs, "Deployment"):
        template = deployment["spec"]["template"]["metadata"]
        if template.get("annotations", {}).get("prometheus.io/scrape") == "true":
            jobs.add(template["labels"][dc.JOB_LABEL])
            ports = [p for c in pod_spec(deployment)["containers"] for p in c["ports"]]
            assert any(p["name"] == dc.METRICS_PORT_NAME for p in ports)
    assert jobs == set(dc.JOBS)


def test_prometheus_rule_is_the_rule_files(docs: list[Doc]) -> None:
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    release, name = dc.PROMETHEUS_RELEASE_LABEL
    assert rule["metadata"]["labels"][release] == name
    groups = [g for path in sorted(RULES.glob("*.yml")) for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == groups, "run .venv/bin/python deploy/k8s/prometheus_rule.py"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for entry in group["rules"]:
            assert ("record" in entry) != ("alert" in entry) and entry["expr"]
    check = subprocess.run(
        [sys.executable, str(K8S / "prometheus_rule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_yamllint() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("yamllint")),
            "--strict",
            "-c",
            str(K8S / ".yamllint.yaml"),
            str(K8S),
            *[str(p) for p in sorted((REPO / "deploy" / "grafana").glob("*.yaml"))],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the names test: manifests vs deploy_contract vs the services -------------------------------------------


def test_contract_prefixes_are_the_services() -> None:
    assert dc.GATEWAY.env_prefix == gateway_config.ENV_PREFIX
    assert dc.RETRIEVER.env_prefix == retriever_config.ENV_PREFIX
    assert dc.RERANKER.env_prefix == reranker_config.ENV_PREFIX
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for service in dc.SERVICES:
        assert service.command in scripts, f"{service.command} is not a console script"


def check_service_container(docs: list[Doc], deployment: Doc, contract: dc.ServiceContract) -> Doc:
    """Ports, probes, annotations and Service shared by every one of our gRPC services."""
    c = container(deployment, contract.component)
    where = f"{deployment['metadata']['name']}/{c['name']}"
    assert image_name(c) in (
        IMAGE_PREFIX + contract.image_name,
        IMAGE_PREFIX + contract.image_name + "-gpu",
    ), f"{where}: image {c['image']}"
    assert port(c, dc.GRPC_PORT_NAME) == contract.grpc_port
    assert port(c, dc.METRICS_PORT_NAME) == contract.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == contract.grpc_port, f"{where}: {probe} is not gRPC health"
        # No service name: the overall ("") status, which every service sets with its own.
        assert c[probe]["grpc"].get("service", "") == "", f"{where}: {probe} names a service"
    # A crashed container is restarted in place by the kubelet (deploy/k8s/README.md, "recovery").
    assert deployment["spec"]["template"]["spec"].get("restartPolicy", "Always") == "Always", where
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(contract.metrics_port)
    assert annotations["prometheus.io/path"] == dc.METRICS_PATH
    return c


def check_common_flags(settings: Any, contract: dc.ServiceContract, where: str) -> None:
    assert settings.host == dc.POD_HOST, f"{where}: binds {settings.host}, not every interface"
    assert settings.port == contract.grpc_port, f"{where}: --port {settings.port}"


def headless_service(docs: list[Doc], name: str, grpc_port: int) -> Doc:
    service = named(docs, "Service", name)
    assert service["spec"].get("clusterIP") == "None", f"Service {name} is not headless"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports[dc.GRPC_PORT_NAME]["port"] == grpc_port
    return service


def check_target(docs: list[Doc], target: str, name: str, grpc_port: int) -> None:
    assert target == dc.service_target(name, grpc_port), f"gateway target {target}"
    headless_service(docs, name, grpc_port)


def test_gateway(docs: list[Doc], tmp_path: Path) -> None:
    deployment = named(docs, "Deployment", dc.GATEWAY.component)
    c = check_service_container(docs, deployment, dc.GATEWAY)
    env = env_values(docs, c)
    args = substitute(c["args"], env)
    check_env(c, dc.GATEWAY, c["args"])
    check_flags(args, lambda a: gateway_config.parse_settings(a, {}), "gateway")
    files = mounted_files(docs, deployment, c, tmp_path)
    assert dc.CONFIG_DIR in files, "gateway config is not mounted"
    assert f"--config={dc.CONFIG_DIR}/{dc.GATEWAY_CONFIG_KEY}" in args
    assert f"--variants={dc.CONFIG_DIR}/{dc.VARIANTS_KEY}" in args
    local_args = relocate(args, files)
    settings = parse_or_fail(lambda: gateway_config.parse_settings(local_args, env), "gateway")
    check_common_flags(settings, dc.GATEWAY, "gateway")
    assert settings.metrics_port == dc.GATEWAY.metrics_port
    for var in dc.GATEWAY.env:
        env_changes_settings(gateway_config.parse_settings, local_args, env, var)
    # The gateway embeds queries with the dense shards' own encoder, or every call falls back to text.
    assert settings.query_encoder == dc.QUERY_ENCODER
    for shard in range(dc.RETRIEVER_SHARDS["dense"]):
        dense = container(named(docs, "Deployment", dc.shard_name("dense", shard)), dc.RETRIEVER.component)
        dense_settings = retriever_config.parse_settings(
            substitute(dense["args"], env_values(docs, dense)), {}
        )
        assert settings.query_encoder == (dense_settings.encoder or gateway_config.PACKAGED_ENCODER)
    # gateway.yaml: one target per shard, each a headless Service; the reranker too.
    for group, count in dc.RETRIEVER_SHARDS.items():
        targets = settings.retrievers[group]
        assert len(targets) == count, f"gateway.yaml lists {len(targets)} {group} shards, not {count}"
        for shard, target in enumerate(targets):
            check_target(docs, target, dc.shard_name(group, shard), dc.RETRIEVER.grpc_port)
    check_target(docs, settings.reranker, dc.RERANKER.component, dc.RERANKER.grpc_port)
    assert settings.reranker_routes == {
        r.model: dc.service_target(r.contract.component, r.contract.grpc_port)
        for r in dc.STORED_VECTOR_RERANKERS
    }
    for r in dc.STORED_VECTOR_RERANKERS:
        check_target(docs, settings.reranker_routes[r.model], r.contract.component, r.contract.grpc_port)
    # variants.yaml: valid, and every variant is servable by this deployment.
    variants = load_variants(settings.variants, settings.variant_bounds)
    servable = variants.restricted_to(tuple(settings.retrievers), has_reranker=True)
    assert not servable.unservable, f"variants this deployment cannot serve: {servable.unservable}"
    service = named(docs, "Service", dc.GATEWAY.component)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        dc.GRPC_PORT_NAME: dc.GATEWAY.grpc_port,
        dc.METRICS_PORT_NAME: dc.GATEWAY.metrics_port,
    }


def shard_deployments(docs: list[Doc]) -> Iterator[tuple[str, int, Doc]]:
    for group, count in dc.RETRIEVER_SHARDS.items():
        for shard in range(count):
            yield group, shard, named(docs, "Deployment", dc.shard_name(group, shard))


def test_retriever_shards(docs: list[Doc]) -> None:
    deployments = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].startswith("retriever-")]
    assert len(deployments) == sum(dc.RETRIEVER_SHARDS.values())
    for group, shard, deployment in shard_deployments(docs):
        name = dc.shard_name(group, shard)
        c = check_service_container(docs, deployment, dc.RETRIEVER)
        env = env_values(docs, c)
        args = substitute(c["args"], env)
        check_env(c, dc.RETRIEVER, c["args"])
        check_flags(args, lambda a: retriever_config.parse_settings(a, {}), name)
        settings = parse_or_fail(partial(retriever_config.parse_settings, args, env), name)
        check_common_flags(settings, dc.RETRIEVER, name)
        assert settings.metrics_port == dc.RETRIEVER.metrics_port
        for var in dc.RETRIEVER.env:
            env_changes_settings(retriever_config.parse_settings, args, env, var)
        # --index /indexes/<name>/<version>/shard-<i>, filled by the init step into the same volume.
        index_path = configmap_data(docs, dc.INDEX_CONFIGMAP)[group]
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", index_path), f"{dc.INDEX_CONFIGMAP}[{group}] = {index_path}"
        assert settings.index == Path(dc.INDEX_MOUNT) / index_path / f"shard-{shard}"
        init = init_container(deployment, "fetch-index")
        assert image_name(init) == IMAGE_PREFIX + "data"
        script = " ".join(init["command"])
        assert f"{dc.INDEX_DATA_ROOT}/${{INDEX_PATH}}/shard-{shard}" in script
        assert env_values(docs, init)["INDEX_PATH"] == index_path
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
        assert mounts["index"] == init_mounts["index"] == dc.INDEX_MOUNT
        headless_service(docs, name, dc.RETRIEVER.grpc_port)


def test_reranker(docs: list[Doc]) -> None:
    deployment = named(docs, "Deployment", dc.RERANKER.component)
    c = check_service_container(docs, deployment, dc.RERANKER)
    env = env_values(docs, c)
    args = substitute(c["args"], env)
    check_env(c, dc.RERANKER, c["args"])
    check_flags(args, lambda a: reranker_config.parse_settings(a, {}), "reranker")
    settings = parse_or_fail(lambda: reranker_config.parse_settings(args, env), "reranker")
    check_common_flags(settings, dc.RERANKER, "reranker")
    assert settings.metrics_port == dc.RERANKER.metrics_port
    for var in dc.RERANKER.env:
        env_changes_settings(reranker_config.parse_settings, args, env, var)
    assert settings.backend == "triton" and settings.cache == "redis"
    fqdn = f"{dc.NAMESPACE}.svc.{dc.CLUSTER_DOMAIN}"
    assert settings.triton_url == f"{dc.TRITON.component}.{fqdn}:{dc.TRITON.grpc_port}"
    assert settings.redis_url == f"redis://{dc.REDIS.component}.{fqdn}:{dc.REDIS.port}/0"
    assert settings.redis_password == f"secret:{dc.REDIS.secret}/{dc.REDIS.secret_key}"
    headless_service(docs, dc.RERANKER.component, dc.RERANKER.grpc_port)


@pytest.mark.parametrize("reranker", dc.STORED_VECTOR_RERANKERS, ids=lambda r: r.contract.component)
def test_stored_vector_reranker(docs: list[Doc], reranker: dc.StoredVectorReranker) -> None:
    contract = reranker.contract
    deployment = named(docs, "Deployment", contract.component)
    c = check_service_container(docs, deployment, contract)
    env = env_values(docs, c)
    args = substitute(c["args"], env)
    check_env(c, contract, c["args"])
    check_flags(args, lambda a: reranker_config.parse_settings(a, {}), contract.component)
    settings = parse_or_fail(lambda: reranker_config.parse_settings(args, env), contract.component)
    check_common_flags(settings, contract, contract.component)
    for var in contract.env:
        env_changes_settings(reranker_config.parse_settings, args, env, var)
    assert settings.backend == reranker.backend and settings.cache == "redis"
    # --artifact-dir /models/<dir>/<version> and --token-store /indexes/<name>/<version>, each filled by an
    # init step from the data image, each version named by a ConfigMap.
    model = configmap_data(docs, dc.TRITON.artifact_configmap)[reranker.key]
    tokens = configmap_data(docs, dc.INDEX_CONFIGMAP)[reranker.key]
    assert settings.artifact_dir == Path(dc.MODEL_MOUNT) / model
    assert settings.token_store == Path(dc.INDEX_MOUNT) / tokens
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for step, var, data_root, path, volume in (
        ("fetch-model", "MODEL_PATH", dc.MODEL_DATA_ROOT, model, dc.MODEL_MOUNT),
        ("fetch-token-store", "TOKENS_PATH", dc.INDEX_DATA_ROOT, tokens, dc.INDEX_MOUNT),
    ):
        init = init_container(deployment, step)
        assert image_name(init) == IMAGE_PREFIX + "data"
        assert f"{data_root}/${{{var}}}" in " ".join(init["command"])
        assert env_values(docs, init)[var] == path
        assert volume in {m["mountPath"] for m in init["volumeMounts"]} and volume in mounts.values()
    headless_service(docs, contract.component, contract.grpc_port)


def test_triton(docs: list[Doc], overlay: str) -> None:
    t = dc.TRITON
    deployment = named(docs, "Deployment", t.component)
    c = container(deployment, t.component)
    image = IMAGE_PREFIX + ("triton-gpu" if overlay == "gpu" else "triton")
    assert image_name(c) == image
    assert (port(c, "http"), port(c, "grpc"), port(c, "metrics")) == (
        t.http_port,
        t.grpc_port,
        t.metrics_port,
    )
    assert c["command"] == ["tritonserver"]
    for flag, value in (
        ("--http-port", t.http_port),
        ("--grpc-port", t.grpc_port),
        ("--metrics-port", t.metrics_port),
        ("--model-repository", t.model_repository),
    ):
        assert f"{flag}={value}" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": t.ready_path, "port": dc.HTTP_PORT_NAME}
    assert c["startupProbe"]["httpGet"] == {"path": t.ready_path, "port": dc.HTTP_PORT_NAME}
    assert c["livenessProbe"]["httpGet"] == {"path": t.live_path, "port": dc.HTTP_PORT_NAME}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(t.metrics_port)
    # The assemble step: flags of operations.triton_repository, writing where tritonserver reads.
    assemble = init_container(deployment, "assemble-repository")
    assert assemble["command"] == ["python3", "-m", "operations.triton_repository"]
    assert image_name(assemble) == image
    env = env_values(docs, assemble)
    assert set(env) == set(t.substitutions)
    args = substitute(assemble["args"], env)
    check_flags(args, lambda a: triton_repository.build_parser().parse_args(a), "assemble-repository")
    parsed = triton_repository.build_parser().parse_args(args)
    assert str(parsed.out) == t.model_repository and str(parsed.source) == t.model_source
    artifact_path = configmap_data(docs, t.artifact_configmap)["cross-encoder"]
    assert parsed.artifact == Path(t.artifact_mount) / artifact_path
    assert (parsed.kind, parsed.device) == ("cpu", "cuda" if overlay == "gpu" else "")
    fetch = init_container(deployment, "fetch-artifact")
    assert f"{t.artifact_data_root}/${{ARTIFACT_PATH}}" in " ".join(fetch["command"])
    service = named(docs, "Service", t.component)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": t.http_port,
        "grpc": t.grpc_port,
        "metrics": t.metrics_port,
    }


def test_redis(docs: list[Doc]) -> None:
    r = dc.REDIS
    deployment = named(docs, "Deployment", r.component)
    c = container(deployment, r.component)
    assert port(c, "redis") == r.port
    assert [e["name"] for e in c["env"]] == list(r.env)
    for entry in c["env"]:
        assert entry["valueFrom"]["secretKeyRef"] == {"name": r.secret, "key": r.secret_key}
    reranker = container(named(docs, "Deployment", dc.RERANKER.component), dc.RERANKER.component)
    (password,) = [e for e in reranker["env"] if e["name"] == "SEARCH_RERANKER_REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": r.secret, "key": r.secret_key}
    script = "\n".join(c["command"])
    assert "requirepass ${REDIS_PASSWORD}" in script and "redis-server" in script
    conf = configmap_data(docs, r.configmap)[r.config_key]
    lines = dict(line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#"))
    for key, value in r.required_config.items():
        assert lines.get(key) == value, f"redis.conf {key} = {lines.get(key)!r}, want {value!r}"
    assert lines["port"] == str(r.port)
    maxmemory = int(lines["maxmemory"].removesuffix("mb")) * 2**20
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and maxmemory < int(limit[:-2]) * 2**20, "maxmemory must fit the limit"
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["config"]
    assert f"{mount}/{r.config_key}" in script
    assert named(docs, "Service", r.component)["spec"]["ports"][0]["port"] == r.port


def test_services_select_pods_and_name_their_ports(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    for service in of_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        matches = [
            d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"Service {service['metadata']['name']} selects {len(matches)} Deployments"
        ports = {
            p["name"]: p["containerPort"] for c in pod_spec(matches[0])["containers"] for p in c["ports"]
        }
        for p in service["spec"]["ports"]:
            assert ports.get(p["targetPort"]) == p["port"], f"Service {service['metadata']['name']} {p}"


def test_workloads_have_resources_security_and_disruption_budgets(docs: list[Doc]) -> None:
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for deployment in of_kind(docs, "Deployment"):
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{c['name']}: {kind}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert ":" in c["image"] and not c["image"].endswith(":latest"), f"{c['name']}: unpinned image"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in names
        # The HPA owns the count; a replicas field would reset it on every apply.
        assert "replicas" not in named(docs, "Deployment", target)["spec"], f"{target} sets replicas"
    budgets = {p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")}
    assert {dc.GATEWAY.component, dc.RERANKER.component} <= budgets
    assert {dc.shard_name(g, i) for g, n in dc.RETRIEVER_SHARDS.items() for i in range(n)} <= budgets
    assert {h["metadata"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")} >= {"gateway"}
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == dc.NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == dc.PART_OF


def test_grafana_dashboard_configmap(docs: list[Doc]) -> None:
    key, value = dc.GRAFANA_DASHBOARD_LABEL
    dashboards = [d for d in of_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get(key) == value]
    assert dashboards, f"no ConfigMap labelled {key}={value} for Grafana's dashboard sidecar"
    committed = {p.name: p.read_text() for p in GRAFANA.glob("*.json")}
    shipped: dict[str, str] = {}
    for configmap in dashboards:
        for name, text in configmap["data"].items():
            assert name.endswith(".json")
            dashboard = json.loads(text)
            assert dashboard.get("panels") or dashboard.get("rows"), f"{name} has no panels"
            shipped[name] = text
    assert shipped == committed, "every deploy/grafana/*.json, as committed, goes into the ConfigMap"


def _gpus(c: Doc) -> str | None:
    limits: dict[str, str] = c["resources"]["limits"]
    return limits.get("nvidia.com/gpu")


def test_gpu_overlay_places_triton_and_dense_shards_on_gpus() -> None:
    docs = render("gpu")
    on_gpu = {dc.TRITON.component, *(dc.shard_name("dense", i) for i in range(dc.RETRIEVER_SHARDS["dense"]))}
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        spec = pod_spec(deployment)
        gpus = [_gpus(c) for c in spec["containers"]]
        if name in on_gpu:
            assert gpus == ["1"], f"{name}: nvidia.com/gpu limits {gpus}"
            assert spec["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
                "tolerations"
            ]
        else:
            assert gpus == [None] * len(gpus) and "nodeSelector" not in spec, f"{name} should stay on CPU"
    for shard in range(dc.RETRIEVER_SHARDS["dense"]):
        c = container(named(docs, "Deployment", dc.shard_name("dense", shard)), dc.RETRIEVER.component)
        assert image_name(c) == IMAGE_PREFIX + "retriever-gpu"
        settings = retriever_config.parse_settings(substitute(c["args"], env_values(docs, c)), {})
        assert settings.device == "cuda"
    bm25 = container(named(docs, "Deployment", dc.shard_name("bm25", 0)), dc.RETRIEVER.component)
    assert image_name(bm25) == IMAGE_PREFIX + "retriever"
    assemble = pod_spec(named(docs, "Deployment", dc.TRITON.component))["initContainers"][1]
    repository = triton_repository.build_parser().parse_args(assemble["args"])
    assert (repository.device, repository.score_batch_size) == ("cuda", 64)


def test_cpu_overlay_asks_for_no_gpus() -> None:
    text = yaml.safe_dump_all(render("cpu"))
    assert "nvidia.com/gpu" not in text and "cuda" not in text


# --- Dockerfiles -------------------------------------------------------------------------------------------


def _stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), flags=re.M))


@pytest.mark.parametrize("contract", dc.SERVICES, ids=lambda c: c.component)
def test_service_dockerfiles(contract: dc.ServiceContract) -> None:
    dockerfile = DOCKER / f"{contract.component}.Dockerfile"
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "multi-stage: build, then a runtime stage"
    final = stages[-1]
    assert f'ENTRYPOINT ["{contract.command}"]' in final
    (user,) = [i for i in final if i.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("0", "root")
    (expose,) = [i for i in final if i.startswith("EXPOSE ")]
    assert expose.split()[1:] == [str(contract.grpc_port), str(contract.metrics_port)]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    # Every package pyproject lists is copied into the build (pip install . needs them all).
    copied = {i.split()[1] for s in stages for i in s if i.startswith("COPY ") and "--from" not in i}
    tops = {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}
    dirs = {pyproject["tool"]["setuptools"]["package-dir"].get(t, t) for t in tops}
    assert {d.split("/")[0] if d.startswith("protos") else d for d in dirs} <= {
        c.split("/")[0] for c in copied
    } | {"protos"}
    assert "protos/gen" in copied
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert any(torch_pin in i for i in stages[0]), "torch pin differs from pyproject.toml"
    if contract is dc.RETRIEVER:
        assert _args(dockerfile)["FAISS_GPU"] in pyproject["project"]["optional-dependencies"]["gpu"]


def test_triton_and_data_dockerfiles() -> None:
    triton = DOCKER / "triton.Dockerfile"
    args = _args(triton)
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", args["TRITON_IMAGE"])
    final = _stages(triton)[-1]
    assert f"COPY triton_models {dc.TRITON.model_source}" in final
    assert any(i.startswith("USER ") and not i.split()[1].startswith("0") for i in final)
    requirements = (REPO / "triton_models" / "requirements.txt").read_text()
    assert args["TOKENIZERS"] in requirements
    assert args["ONNXRUNTIME"].replace("-gpu", "") in requirements
    assert args["TORCH"] in requirements
    assert args["NUMPY"] in requirements
    data = _stages(DOCKER / "data.Dockerfile")[-1]
    assert "COPY . /data/" in data and any(i.startswith("USER 65534") for i in data)
    assert dc.INDEX_DATA_ROOT.startswith("/data/") and dc.TRITON.artifact_data_root.startswith("/data/")


def _expand(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def test_base_images_are_pinned() -> None:
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        args = _args(dockerfile)
        for stage in _stages(dockerfile):
            image = _expand(stage[0].split()[1], args)
            name, _, tag = image.rpartition(":")
            assert name and re.search(r"\d+\.\d+", tag) and tag != "latest", f"{dockerfile.name}: {image}"


def test_triton_repository_assembles_for_gpu(tmp_path: Path) -> None:
    artifact = tmp_path / "artifacts" / "cross-encoder" / "v1"
    artifact.mkdir(parents=True)
    (artifact / "manifest.json").write_text(json.dumps({"name": "ce-test", "max_length": 128}))
    out = tmp_path / "models" / "repository"
    code = triton_repository.main(
        [
            "--artifact",
            str(artifact),
            "--source",
            str(REPO / "triton_models"),
            "--out",
            str(out),
            "--kind",
            "gpu",
            "--score-batch-size",
            "64",
            "--device",
            "cuda:1",
        ]
    )
    assert code == 0
    config = (out / "cross_encoder" / "config.pbtxt").read_text()
    assert "KIND_GPU" in config and "__ARTIFACT" not in config and '"ce-test"' in config
    assert 'key: "SCORE_BATCH_SIZE"\n  value: { string_value: "64" }' in config
    assert 'key: "DEVICE"\n  value: { string_value: "cuda:1" }' in config
    assert (
        triton_repository.main(
            [
                "--artifact",
                str(tmp_path / "missing" / "v1"),
                "--source",
                str(REPO / "triton_models"),
                "--out",
                str(out),
            ]
        )
        == 2
    )


# --- the single-node overlay: the first stage and ColBERT in the gateway's process --------------------------

SINGLE_NODE = "single-node"


def test_single_node_overlay_validates_strictly() -> None:
    docs = render(SINGLE_NODE)
    for version in dc.KUBERNETES_VERSIONS:
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_single_node_overlay_runs_the_indexes_and_colbert_in_the_gateway(tmp_path: Path) -> None:
    docs = render(SINGLE_NODE)
    colbert = next(r for r in dc.STORED_VECTOR_RERANKERS if r.backend == "late-interaction")
    # The pods whose work the gateway does are gone, with their Services, budgets and autoscalers.
    gone = {dc.shard_name(g, i) for g, n in dc.RETRIEVER_SHARDS.items() for i in range(n)}
    gone.add(colbert.contract.component)
    assert not [d for d in docs if d["metadata"]["name"] in gone]
    deployment = named(docs, "Deployment", dc.GATEWAY.component)
    c = check_service_container(docs, deployment, dc.GATEWAY)
    env = env_values(docs, c)
    args = substitute(c["args"], env)
    check_flags(args, lambda a: gateway_config.parse_settings(a, {}), SINGLE_NODE)
    # The pod's paths under tmp_path: its mounted config files, and the index directories the init step fills.
    local_args = [
        arg.replace(f"{dc.INDEX_MOUNT}/", f"{tmp_path}{dc.INDEX_MOUNT}/").replace(
            f"{dc.MODEL_MOUNT}/", f"{tmp_path}{dc.MODEL_MOUNT}/"
        )
        for arg in relocate(args, mounted_files(docs, deployment, c, tmp_path))
    ]
    indexes = configmap_data(docs, dc.INDEX_CONFIGMAP)
    models = configmap_data(docs, dc.TRITON.artifact_configmap)
    for group in dc.RETRIEVER_SHARDS:
        (tmp_path / dc.INDEX_MOUNT.lstrip("/") / indexes[group]).mkdir(parents=True)
    settings = parse_or_fail(lambda: gateway_config.parse_settings(local_args, env), SINGLE_NODE)
    check_common_flags(settings, dc.GATEWAY, SINGLE_NODE)
    assert settings.retrievers == {} and settings.reranker is None
    index_root = tmp_path / dc.INDEX_MOUNT.lstrip("/")
    assert settings.indexes == tuple(index_root / indexes[g] for g in dc.RETRIEVER_SHARDS)
    # The local reranker is the base's ColBERT reranker less its serving flags: same model, store and cache.
    local = settings.local_reranker
    assert local is not None
    assert local.artifact_dir == tmp_path / dc.MODEL_MOUNT.lstrip("/") / models[colbert.key]
    assert local.token_store == index_root / indexes[colbert.key]
    assert local.redis_password == env["SEARCH_RERANKER_REDIS_PASSWORD"]
    base = container(
        named(render("cpu"), "Deployment", colbert.contract.component), colbert.contract.component
    )
    served = reranker_config.parse_settings(substitute(base["args"], env_values(render("cpu"), base)), {})
    assert (local.backend, local.cache, local.redis_url) == (served.backend, served.cache, served.redis_url)
    # The other second stages are still services, reached by their models' routes.
    others = [r for r in dc.STORED_VECTOR_RERANKERS if r is not colbert]
    assert set(settings.reranker_routes) == {"cross-encoder-minilm", *(r.model for r in others)}
    check_target(
        docs, settings.reranker_routes["cross-encoder-minilm"], dc.RERANKER.component, dc.RERANKER.grpc_port
    )
    for r in others:
        check_target(docs, settings.reranker_routes[r.model], r.contract.component, r.contract.grpc_port)
    variants = load_variants(settings.variants, settings.variant_bounds)
    servable = variants.restricted_to(tuple(dc.RETRIEVER_SHARDS), has_reranker=True)
    assert not servable.unservable, f"variants this deployment cannot serve: {servable.unservable}"
    # One init step copies every index version and the model the args name out of the data image.
    init = init_container(deployment, "fetch-data")
    assert image_name(init) == IMAGE_PREFIX + "data"
    script = " ".join(init["command"])
    assert f"{dc.INDEX_DATA_ROOT}/${{path}}" in script and f"{dc.MODEL_DATA_ROOT}/${{MODEL_PATH}}" in script
    init_env = env_values(docs, init)
    assert {init_env[v] for v in ("DENSE_PATH", "BM25_PATH", "TOKENS_PATH")} == {
        indexes["dense"],
        indexes["bm25"],
        indexes[colbert.key],
    }
    assert init_env["MODEL_PATH"] == models[colbert.key]
    for mount in (dc.INDEX_MOUNT, dc.MODEL_MOUNT):
        assert mount in {m["mountPath"] for m in init["volumeMounts"]}
        assert mount in {m["mountPath"] for m in c["volumeMounts"]}
    for step in (init, c):
        assert {"cpu", "memory"} <= set(step["resources"]["limits"])
        assert step["securityContext"]["allowPrivilegeEscalation"] is False
