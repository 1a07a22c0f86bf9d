// Package docker_test validates the production Dockerfile and compose file as far as a machine
// without a Docker engine can: the compose file is loaded and schema-checked by compose-go (the
// library `docker compose config` itself uses), and the Dockerfile's inputs are checked
// against the repository.
package docker_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

func TestComposeFileIsValid(t *testing.T) {
	t.Setenv("MYSQL_ROOT_PASSWORD", "pw")
	t.Setenv("SYSVM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	t.Setenv("SYSVM_API_KEY", "sysvm_0123456789abcdef")
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"}, cli.WithOsEnv, cli.WithWorkingDirectory("."))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	want := map[string]bool{"mysql": true, "temporal": true, "temporal-ui": true, "migrate": true, "worker": true, "api": true}
	for name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name, svc := range p.Services {
		for dep := range svc.DependsOn {
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		if strings.HasPrefix(name, "temporal") || name == "mysql" || name == "prometheus" {
			continue
		}
		env := svc.Environment
		for _, k := range []string{"SYSVM_DB_DSN", "SYSVM_SECRET_KEY", "SYSVM_TEMPORAL_ADDRESS"} {
			if v, ok := env[k]; !ok || v == nil || *v == "" {
				t.Errorf("service %s lacks %s", name, k)
			}
		}
		if v := env["SYSVM_DB_DSN"]; v != nil && !strings.HasPrefix(*v, "mysql://root:pw@tcp(mysql:3306)/") {
			t.Errorf("service %s DSN %q does not point at the mysql service", name, *v)
		}
	}
	if api := p.Services["api"]; len(api.Ports) == 0 || api.Ports[0].Target != 8080 {
		t.Errorf("api must publish 8080: %+v", api.Ports)
	}
	// Only the sysvm API is published: Temporal's frontend and Web UI (7233, 8233, and the UI
	// container's 8080) stay private, and so does MySQL. Prometheus may be published on the
	// host's loopback only (an operator's browser on that host reads it).
	for name, svc := range p.Services {
		if name == "api" {
			continue
		}
		for _, port := range svc.Ports {
			if name != "prometheus" || port.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes port %+v; only the api may (prometheus on 127.0.0.1 only)", name, port)
			}
		}
	}
	for _, port := range p.Services["api"].Ports {
		if port.Published == "7233" || port.Published == "8233" {
			t.Errorf("api publishes a Temporal port: %+v", port)
		}
	}
	// The UI decodes payloads through the API's codec endpoint, and the API allows its origin.
	ui := p.Services["temporal-ui"].Environment
	if v := ui["TEMPORAL_CODEC_ENDPOINT"]; v == nil || !strings.HasSuffix(*v, "/codec") {
		t.Errorf("temporal-ui codec endpoint: %v", v)
	}
	if v := ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"]; v == nil || *v != "true" {
		t.Errorf("temporal-ui must send credentials to the codec endpoint: %v", v)
	}
	if v := p.Services["api"].Environment["SYSVM_CODEC_ORIGINS"]; v == nil || *v == "" {
		t.Error("api lacks SYSVM_CODEC_ORIGINS for the UI")
	}

	// Without the required secrets the file refuses to load, naming the variable.
	t.Setenv("SYSVM_SECRET_KEY", "")
	os.Unsetenv("SYSVM_SECRET_KEY")
	opts, _ = cli.NewProjectOptions([]string{"compose.yaml"}, cli.WithOsEnv, cli.WithWorkingDirectory("."))
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "SYSVM_SECRET_KEY") {
		t.Errorf("missing SYSVM_SECRET_KEY not reported: %v", err)
	}
}

func TestDockerfileInputsExist(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := ".."
	stages, froms := map[string]bool{}, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			froms++
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				stages[fields[3]] = true
			}
		case "COPY":
			if strings.HasPrefix(fields[1], "--from=") {
				if !stages[strings.TrimPrefix(fields[1], "--from=")] {
					t.Errorf("COPY from unknown stage: %s", sc.Text())
				}
				continue
			}
			for _, src := range fields[1 : len(fields)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("COPY source %s missing: %v", src, err)
				}
			}
		}
		for _, fld := range fields {
			if strings.HasPrefix(fld, "./cmd/") {
				if _, err := os.Stat(filepath.Join(root, fld)); err != nil {
					t.Errorf("build target %s missing", fld)
				}
			}
		}
	}
	if froms < 2 {
		t.Errorf("want a multi-stage build, found %d FROM lines", froms)
	}
}
