// Package version holds the build version, set at link time with
// -ldflags "-X github.com/orbweaver/orbweaver/internal/version.Version=...".
package version

// Version is "dev" unless set by the build.
var Version = "dev"
