// Command meshctl talks to a mesh from a terminal: call any service, list
// services and instances, show a meshd's status. See `meshctl help`.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
