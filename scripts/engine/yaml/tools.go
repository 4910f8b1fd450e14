//go:build tools

// Package tools pins Pulumi YAML's language host (github.com/pulumi/pulumi-yaml v1.25.0, the
// newest the proxy serves) in its own wrapper module: it is built against pkg/v3 v3.206.0, whose
// API v3.274.0 changed, and a language host talks to the engine over versioned gRPC only.
package tools

import _ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
