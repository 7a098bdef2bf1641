# The demo app image: `lbctl run` (PID 1) supervises a local Consul client
# agent and `lbctl register -- greeter-server`, which registers the greeter
# with that agent once it listens, keeps it registered, and on SIGTERM drains
# it (maintenance, wait for every load balancer) before stopping it
# (build/app.yaml).
#
#   docker build -t lbctl-greeter -f build/Dockerfile.app .

# The Consul agent: the official image's binary, the servers' version
# (a static Go binary: distroless/static runs it).
FROM hashicorp/consul:1.21.0 AS consul

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/lbctl ./cmd/greeter-server

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/lbctl /out/greeter-server /usr/local/bin/
COPY --from=consul /bin/consul /usr/local/bin/consul
COPY build/app.yaml /etc/lbctl/lbctl.yaml
# Seed-style settings, read by lbctl register: override them per service.
ENV APP_NAME=greeter \
    APP_PORT=7000 \
    HEALTH_CHECK_TYPE=grpc \
    GREETER_LISTEN=0.0.0.0:7000
EXPOSE 7000
ENTRYPOINT ["lbctl", "run", "--config", "/etc/lbctl/lbctl.yaml"]
