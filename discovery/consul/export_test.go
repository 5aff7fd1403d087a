package consul

import "github.com/meshrpc/mesh/discovery"

// Abandon stops renewing and watching without deregistering anything, as a
// killed meshd would: Consul then expires its instances after the TTL.
func (c *Registry) Abandon() {
	c.mu.Lock()
	c.mine = make(map[string]discovery.Instance)
	c.mu.Unlock()
	c.Close()
}
