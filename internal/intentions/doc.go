// Package intentions decides who may call whom: rules "source => destination:
// allow|deny" in the shape of Consul's intentions, read from meshd's YAML or
// followed in Consul, compiled into a Set that answers a call in a couple of
// map lookups and no allocation.
//
// The destination meshd asks it for every call it delivers (routing's
// Authorize stage), with the caller's proven identity: the service its app
// connection proved it is, carried between meshds inside their mutually
// authenticated connection, or Anonymous.
package intentions
