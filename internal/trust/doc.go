// Package trust is who a meshd is and whom it lets in at the host boundary:
// SPIFFE identities (spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<name>),
// a Store holding this meshd's certificate and the CA roots it checks peers
// against, and the TLS 1.3 configurations of the meshd-to-meshd listener and
// dialer built on it.
//
// The Store is fed by a source that keeps it current: FromFiles (a cert, key
// and CA bundle on disk, read again when they change) or FromConsul (the
// local agent's connect CA: its roots and a leaf for "meshd", both followed
// with blocking queries). A rotation swaps the Store's bundle; connections
// already open keep theirs, new handshakes use the new one, so no call is
// dropped.
//
// It knows nothing of frames or routing: meshd uses it to wrap the sockets
// of its host listener and of the connections it dials.
package trust
