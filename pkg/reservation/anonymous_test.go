package reservation

import "testing"

func TestAnonymous(t *testing.T) {
	if o := AnonymousOwner("team-a"); !Anonymous(o) {
		t.Errorf("Anonymous(%q) = false for an owner AnonymousOwner made", o)
	}
	for _, o := range []string{
		"team-a/getport-db",   // a release named so
		"team-a/getport-x:80", // a Service port's default owner
		"team-a/getport-0f8fad5b-d9cb-469f-a165-70867728950e:80", // a Service named like one, its port
		"team-a/gw",
		"getport-0f8fad5b-d9cb-469f-a165-70867728950e",
	} {
		if Anonymous(o) {
			t.Errorf("Anonymous(%q) = true", o)
		}
	}
}
