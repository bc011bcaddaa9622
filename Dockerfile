# syntax=docker/dockerfile:1
#
# postbackd: a static binary on a distroless base, run as a non-root user.
#
#   docker build -t postbackd:local --build-arg VERSION=$(git describe --always) .
#   docker run --rm --network host -v $PWD/examples/local.yaml:/etc/postbackd/config.yaml:ro postbackd:local
#
# (examples/local.yaml names the servers of scripts/infra.sh on the host's
# loopback, hence --network host.)
#
# The same image runs the service (default command) and the recording
# tracker (command: tracker --addr :8080), as docker-compose.yml does.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer stays cached while only the code changes.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/postbackd ./cmd/postbackd

# static-debian12 carries CA certificates and time zone data, nothing else:
# no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/postbackd /usr/local/bin/postbackd
# The base image's nonroot user, by number: Kubernetes verifies runAsNonRoot
# only against a numeric user (deploy/kubernetes runs it as 65532 too).
USER 65532:65532
# Admin server: /healthz, /readyz, /metrics.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/postbackd"]
CMD ["run", "--config", "/etc/postbackd/config.yaml"]
