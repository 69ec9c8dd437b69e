package auth_test

import (
	"context"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/berth-dev/berth/pkg/auth"
)

// TestDefaultNamespace: install, getport and setingress all call it, so a
// request that names no namespace acts in the same one whichever function
// it reaches.
func TestDefaultNamespace(t *testing.T) {
	sa := func(ns string) context.Context {
		return auth.WithCaller(context.Background(), auth.Caller{User: &user.DefaultInfo{Name: "system:serviceaccount:" + ns + ":app"}})
	}
	delivery := auth.WithCaller(context.Background(), auth.Caller{User: &user.DefaultInfo{Name: "system:serviceaccount:knative-eventing:broker"}, Delivery: true, Tenant: "team-b"})
	person := auth.WithCaller(context.Background(), auth.Caller{User: &user.DefaultInfo{Name: "alice"}})
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		allowed []string
		want    string
	}{
		{"a ServiceAccount in an allowed namespace", sa("team-b"), []string{"team-a", "team-b"}, "team-b"},
		{"a ServiceAccount elsewhere (the 2018 client in default)", sa("default"), []string{"team-a", "team-b"}, "team-a"},
		{"an event for an allowed tenant", delivery, []string{"team-a", "team-b"}, "team-b"},
		{"a person", person, []string{"team-a"}, "team-a"},
		{"no caller", context.Background(), []string{"team-a"}, "team-a"},
		{"nothing allowed: the caller's own", sa("default"), nil, "default"},
		{"nothing allowed, no home", person, nil, ""},
	} {
		if got := auth.DefaultNamespace(tc.ctx, tc.allowed); got != tc.want {
			t.Errorf("%s: DefaultNamespace(%v) = %q, want %q", tc.name, tc.allowed, got, tc.want)
		}
	}
}
