//go:build tools

// Package tools pins the Pulumi CLI's module in this wrapper module's go.mod/go.sum, so that
// `go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi` inside it builds the released CLI.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
