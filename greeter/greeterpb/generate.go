// Package greeterpb holds the generated gRPC code for the demo greeter.
package greeterpb

// Needs protoc (Debian: protobuf-compiler) and the Go plugins:
//   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative greeter.proto
