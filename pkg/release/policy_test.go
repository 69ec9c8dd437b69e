package release

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestCheckSource(t *testing.T) {
	p := Policy{Sources: []string{"https://charts.example.com", "oci://registry.example.com/charts/", "http://192.0.2.2:8080/", "oci://ghcr.io/acme",
		"https://[2001:db8::1]/charts"}}
	for _, tc := range []struct {
		src  string
		want error
	}{
		{"https://charts.example.com", nil}, // a repository base URL, no trailing slash
		{"https://charts.example.com/team", nil},
		{"https://charts.example.com/index.yaml", nil},
		{"http://192.0.2.2:8080", nil},
		{"oci://registry.example.com/charts/gw", nil},
		{"https://charts.example.com.evil.net", ErrSourceNotAllowed},
		{"https://charts.example.co", ErrSourceNotAllowed},
		{"http://192.0.2.2:80801", ErrSourceNotAllowed},
		{"http://charts.example.com/", ErrSourceNotAllowed},
		{"oci://registry.example.com/other/gw", ErrSourceNotAllowed},
		{"https://user:pw@charts.example.com/", ErrBadRequest},
		{"ftp://charts.example.com/", ErrBadRequest},
		{"charts.example.com", ErrBadRequest},
		{"https://charts.example.com@evil.io", ErrBadRequest}, // userinfo: refused before any match
		{"https://charts.example.com.evil.io", ErrSourceNotAllowed},
		{"https://charts.example.com:8443", ErrSourceNotAllowed},
		{"https://CHARTS.example.com/team", nil},
		{"https://charts.example.com/../other", ErrBadRequest}, // dot segments: a server may resolve them or not
		{"https://charts.example.com/evil/%2e%2e/team", ErrBadRequest},
		{"https://charts.example.com/a%2fb", ErrBadRequest},
		{"oci://ghcr.io/acme/gw", nil},
		{"oci://ghcr.io/acme", nil},
		{"oci://ghcr.io/acme-evil/gw", ErrSourceNotAllowed},
		{"oci://ghcr.io/acme/../acme-evil/gw", ErrBadRequest},
		{"oci://ghcr.io/acmegw", ErrSourceNotAllowed},
		{"https://[2001:db8::1]/charts/gw", nil},
		{"https://[2001:db8::1]/chartsx", ErrSourceNotAllowed},
		{"https://[2001:db8::2]/charts", ErrSourceNotAllowed},
		{"https://charts.example.com/?x=1", ErrBadRequest},
		{"https://charts.example.com:http/", ErrBadRequest},
	} {
		err := p.CheckSource(tc.src)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("CheckSource(%q) = %v, want %v", tc.src, err, tc.want)
		}
	}
}

func TestForbiddenAddress(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"169.254.169.254", true}, {"10.96.0.1", true}, {"172.16.5.5", true}, {"192.168.1.1", true},
		{"100.64.0.1", true}, {"100.127.255.254", true}, {"fd00::1", true}, {"fe80::1", true}, {"::1", true}, {"::", true},
		{"100.100.100.200", true}, {"fd00:ec2::254", true}, {"224.0.0.1", true},
		{"203.0.113.5", false}, {"100.128.0.1", false}, {"2001:db8::1", false}, {"8.8.8.8", false},
	} {
		if got := forbiddenAddress(net.ParseIP(tc.ip)); got != tc.want {
			t.Errorf("forbiddenAddress(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

func TestRedactSecrets(t *testing.T) {
	manifest := `---
# Source: c/templates/secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: s
data:
  password: aHVudGVyMg==
stringData:
  token: hunter2
---
# Source: c/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
data:
  greeting: hello
`
	got := RedactSecrets(manifest)
	if strings.Contains(got, "hunter2") || strings.Contains(got, "aHVudGVyMg==") {
		t.Errorf("RedactSecrets left a secret:\n%s", got)
	}
	for _, want := range []string{"password: (redacted)", "token: (redacted)", "greeting: hello", "# Source: c/templates/secret.yaml", "name: s"} {
		if !strings.Contains(got, want) {
			t.Errorf("RedactSecrets lost %q:\n%s", want, got)
		}
	}
}

func TestLocksGoWhenUnused(t *testing.T) {
	in := &Installer{}
	done := make(chan struct{})
	ctx := context.Background()
	unlock, _ := in.lock(ctx, "ns", "a")
	go func() {
		defer close(done)
		u, _ := in.lock(ctx, "ns", "a") // waits for the first holder
		u()
	}()
	for i := 0; i < 100; i++ {
		u, _ := in.lock(ctx, "ns", fmt.Sprintf("r%d", i))
		u()
	}
	unlock()
	<-done
	if n := in.locks.Len(); n != 0 {
		t.Errorf("%d locks left after every operation ended, want 0", n)
	}
}
