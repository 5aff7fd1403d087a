// Package version says which build of mesh a binary is: the module version
// and the commit it was built from, as the Go toolchain records them in the
// binary (go build in a git checkout stamps the commit).
package version
