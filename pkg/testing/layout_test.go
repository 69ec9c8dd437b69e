// Package testing_test keeps the line between berth and its tooling: what ships
// (functions/ and the product packages in pkg/) links nothing under pkg/testing
// and nothing of the sample in charts/.
package testing_test

import (
	"os/exec"
	"strings"
	"testing"
)

func TestFunctionsLinkNoTooling(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../functions/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/berth-dev/berth/"
	var ours int
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, module) {
			continue
		}
		ours++
		rel := strings.TrimPrefix(p, module)
		if !strings.HasPrefix(rel, "functions/") && !strings.HasPrefix(rel, "pkg/") || strings.HasPrefix(rel, "pkg/testing/") {
			t.Errorf("a function links %s: tooling and samples stay out of what ships", rel)
		}
	}
	if ours < 4 {
		t.Fatalf("go list found %d of berth's packages; the check saw nothing", ours)
	}
}
