// Package dashboard is meshd's ops view, served read-only on its admin
// port: a page of hand-written HTML, CSS and JavaScript (embedded; no CDN,
// so it works from the loopback with no internet) and the JSON it reads,
// for tools too.
//
// Views: every service with its calls per second, success rate, p50/p99
// and instances (health, breakers); one service with its callers, callees,
// methods, policy and intentions and its history; a live tail of calls with
// their routing explanation; the slowest and failed traces of a service
// from the trace backend, as span waterfalls. Any meshd shows the whole
// mesh: it asks the other meshds for their Reports over the host boundary
// and adds them up (each call is counted once, by its caller's meshd),
// marking the meshds that did not answer.
package dashboard
