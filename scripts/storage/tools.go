//go:build tools

// Package tools pins fake-gcs-server in this wrapper module's go.mod/go.sum, so that
// `go build github.com/fsouza/fake-gcs-server` inside it builds the pinned release.
package tools

import _ "github.com/fsouza/fake-gcs-server"
