package release

import (
	"errors"
	"testing"
)

func TestCheckSource(t *testing.T) {
	p := Policy{Sources: []string{"https://charts.example.com/", "oci://registry.example.com/charts/", "http://192.0.2.2:8080/"}}
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
	} {
		err := p.CheckSource(tc.src)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("CheckSource(%q) = %v, want %v", tc.src, err, tc.want)
		}
	}
}
