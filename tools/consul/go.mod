// Builds a real Consul agent from the Go module proxy, for tests and for users
// without a Consul package. Its own module, so Consul's dependencies stay out
// of mesh's. See scripts/tool.sh.
module github.com/meshrpc/mesh/tools/consul

go 1.26.8

exclude (
	github.com/hashicorp/go-msgpack v1.1.5
	github.com/hashicorp/go-msgpack v1.1.6
)
