# syntax=docker/dockerfile:1
# Data image: built indexes and cross-encoder artifacts, copied by the pods' init steps into their volumes.
# Not a service: one layer of files on a small pinned base with a shell for the init step's `cp`.
# Build from a staging folder laid out as the pods expect (deploy/k8s/README.md):
#   stage/indexes/<index name>/<version>/shard-<i>/...      (search-build-index output)
#   stage/models/cross-encoder/<version>/...                (training export output)
#   stage/models/colbert/<version>/...                      (training.late_interaction output)
#   stage/indexes/<index name>/colbert-<version>/...        (search-build-index --kind late-interaction)
#   stage/models/all-mpnet-base-v2/<version>/...            (search-packaged-model all-mpnet-base-v2)
#   stage/indexes/<index name>/mpnet-<version>/...          (search-build-index --kind bi-encoder)
#   docker build -f deploy/docker/data.Dockerfile -t REGISTRY/neural-search/data:TAG stage
FROM busybox:1.37.0
COPY . /data/
USER 65534:65534
