// Package testkit holds what mesh's tests in several packages share: a
// logger that drops everything, and polling for a condition. It imports
// nothing of mesh, so any package's tests can use it.
package testkit
