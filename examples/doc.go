// Package examples holds small services to try the mesh with: echo (raw)
// and kv (a JSON key-value store). Each advertises to a meshd with the SDK.
package examples
