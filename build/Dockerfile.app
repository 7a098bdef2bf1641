# The demo app image: the greeter gRPC server run by `lbctl register`, which
# registers it in Consul once it listens, keeps it registered, and on SIGTERM
# drains it (maintenance, wait for every load balancer) before stopping it.
#
#   docker build -t lbctl-greeter -f build/Dockerfile.app .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/lbctl ./cmd/greeter-server

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/lbctl /out/greeter-server /usr/local/bin/
# Seed-style settings, read by lbctl register: override them per service.
ENV APP_NAME=greeter \
    APP_PORT=7000 \
    HEALTH_CHECK_TYPE=grpc \
    GREETER_LISTEN=0.0.0.0:7000
EXPOSE 7000
ENTRYPOINT ["lbctl", "register", "--", "greeter-server"]
