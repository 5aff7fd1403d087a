//go:build integration

package integration

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// The systemd unit passes systemd-analyze verify (with ExecStart pointed at
// the meshd just built, since /usr/local/bin/meshd is not installed here).
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile("../deploy/systemd/meshd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/meshd"), []byte(filepath.Join(binDir, "meshd")))
	path := filepath.Join(t.TempDir(), "meshd.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The systemd config starts a meshd that joins a Consul agent, as
// systemctl enable --now would: only the addresses are moved to free ports
// (and its agent to the test's).
func TestSystemdConfigStarts(t *testing.T) {
	agent := testconsul.Start(t)
	ports := testconsul.FreePorts(t, "127.0.0.1", 3)
	itoa := strconv.Itoa
	addr := func(i int) string { return "127.0.0.1:" + itoa(ports[i]) }
	h := &host{ip: "127.0.0.1", addr: addr(0), admin: addr(1), peer: addr(2), consul: agent.HTTPAddr}
	sock := filepath.Join(t.TempDir(), "apps.sock") // the config's is in /run/meshd, which systemd makes
	h.meshd = start(t, "meshd", "--config", "../deploy/systemd/meshd.yaml", "--listen", h.addr, "--admin", h.admin,
		"--peer-listen", "0.0.0.0:"+itoa(ports[2]), "--consul", h.consul, "--listen-unix", sock)
	testkit.WaitFor(t, 10*time.Second, "meshd from the systemd config healthy", func() bool {
		res, err := http.Get("http://" + h.admin + "/health") // ready: registry and identity in
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	st := status(t, h)
	if strings.HasPrefix(st.Advertise, "0.0.0.0") || !strings.HasSuffix(st.Advertise, ":"+itoa(ports[2])) {
		t.Fatalf("advertise %q", st.Advertise)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("the apps' Unix socket: %v", err)
	} else {
		c.Close()
	}
	t.Logf("deploy/systemd/meshd.yaml: meshd up, advertising %s (its default route), %s", st.Advertise, st.Trust.HostBoundary)
}

// The Kubernetes manifest applies in order (its namespace first, then what
// lives in it), and the compose file is valid for docker-compose.
func TestDeployManifests(t *testing.T) {
	b, err := os.ReadFile("../deploy/kubernetes/meshd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var kinds []string
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "Namespace" && doc.Metadata.Namespace != "mesh" {
			t.Errorf("%s %s is not in the namespace mesh", doc.Kind, doc.Metadata.Name)
		}
		kinds = append(kinds, doc.Kind)
	}
	if strings.Join(kinds, ",") != "Namespace,ConfigMap,DaemonSet" {
		t.Fatalf("manifest kinds in order: %v", kinds)
	}
	dc := []string{"docker-compose"}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		dc = []string{"docker", "compose"}
	}
	if out, err := exec.Command(dc[0], append(dc[1:], "-f", "../deploy/compose.yaml", "config", "-q")...).CombinedOutput(); err != nil {
		t.Fatalf("compose config: %v\n%s", err, out)
	}
}
