package cluster

import (
	"slices"
	"testing"
)

func TestSplitRule(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			[]string{"-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}},
		{`-A PREROUTING -m comment --comment "say \"hi\"" -j KUBE-SERVICES` + "\n",
			[]string{"-A", "PREROUTING", "-m", "comment", "--comment", `say "hi"`, "-j", "KUBE-SERVICES"}},
		{`-A FORWARD  -j CNI-FORWARD`, []string{"-A", "FORWARD", "-j", "CNI-FORWARD"}},
		{`-A X --comment ""`, []string{"-A", "X", "--comment", ""}},
	} {
		if got := splitRule(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("splitRule(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestOurChains(t *testing.T) {
	dump := []byte("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:CNI-abc - [0:0]\n:DOCKER - [0:0]\n" +
		"-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n")
	if got, want := ourChains(dump), []string{"KUBE-SERVICES", "CNI-abc"}; !slices.Equal(got, want) {
		t.Errorf("ourChains = %q, want %q", got, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/tmp/a\040b/c`); got != "/tmp/a b/c" {
		t.Errorf("unescapeMount = %q", got)
	}
	if !within("/tmp/berth-e2e/x", "/tmp/berth-e2e") || within("/tmp/berth-e2e2", "/tmp/berth-e2e") {
		t.Error("within matched a sibling folder, or missed a child")
	}
}
