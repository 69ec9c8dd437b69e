package entrypoint

import (
	"errors"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	tests := []struct {
		id       string
		wantKind Kind
		wantName string
		wantErr  error
	}{
		{"service.ingress-nginx-controller", KindService, "ingress-nginx-controller", nil},
		{"gateway.shared", KindGateway, "shared", nil},
		{"gateway.a.b", "", "", ErrBadID},
		{"shared", "", "", ErrBadID},
		{"ingress.shared", "", "", ErrBadID},
		{"service.", "", "", ErrBadID},
		{"service.UPPER", "", "", ErrBadID},
		{"service." + strings.Repeat("a", 64), "", "", ErrBadID},
		{"service.$(id)", "", "", ErrBadID},
	}
	for _, tc := range tests {
		kind, name, err := ParseID(tc.id)
		if kind != tc.wantKind || name != tc.wantName || !errors.Is(err, tc.wantErr) {
			t.Errorf("ParseID(%q) = %q, %q, %v; want %q, %q, %v", tc.id, kind, name, err, tc.wantKind, tc.wantName, tc.wantErr)
		}
	}
	ep := EntryPoint{Kind: KindGateway, Name: "shared"}
	if ep.ID() != "gateway.shared" {
		t.Errorf("ID = %q", ep.ID())
	}
}
