package localrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/pkg/testing/figures"
)

// coldStartRoutes are the real API calls each function's first request makes:
// the tenant's token reviewed, its access checked, the cluster read.
var coldStartRoutes = map[string]string{
	"floor":      "/",
	"install":    "/releases",
	"getport":    "/ports",
	"setingress": "/exposures",
}

// BenchmarkColdStart prints, from one run against one API server, each
// function's time from exec to its first 200 on a real API call, and its
// peak RSS then, beside the floor for any function that reads the cluster
// (pkg/testing/floor: a client-go server listing one ConfigMap per request).
// Every binary, the floor's too, is built as ko.yaml builds the images
// (static, trimmed, stripped): a cgo build of install carries 16 MB of
// dynamic symbols and 30 MB more RSS than the image does.
// Medians of 21 rounds (one start spreads by a third on this machine); each
// round starts every binary once, in an order that rotates, so that a busy
// moment of the machine falls on each in turn.
func BenchmarkColdStart(b *testing.B) {
	ctx, env := startForTest(b, Options{})
	bin := b.TempDir()
	pkgs := map[string]string{"floor": "./pkg/testing/floor"}
	for _, fn := range Functions {
		pkgs[fn] = "./functions/" + fn
	}
	for name, pkg := range pkgs {
		if err := buildShipped(ctx, env.opts.Root, pkg, filepath.Join(bin, name)); err != nil {
			b.Fatal(err)
		}
	}
	order := append([]string{"floor"}, Functions...)
	const rounds = 21
	for range b.N {
		first := map[string][]time.Duration{}
		rss := map[string][]int64{}
		for r := range rounds + 1 {
			for i := range order {
				name := order[(i+r)%len(order)]
				d, kb := coldStart(b, env, bin, name)
				if r == 0 {
					continue // the first round warms the page cache
				}
				first[name] = append(first[name], d)
				rss[name] = append(rss[name], kb)
			}
		}
		base := figures.Median(first["floor"])
		var out strings.Builder
		fmt.Fprintf(&out, "\n  exec to first 200 on a real API call, median of %d, and peak RSS then (median)\n", rounds)
		fmt.Fprintf(&out, "  %-11s %-18s %9s %8s %8s\n", "", "route", "first 200", "ratio", "RSS")
		for _, name := range order {
			d := figures.Median(first[name])
			ratio := float64(d) / float64(base)
			mb := float64(figures.Median(rss[name])) / 1024
			fmt.Fprintf(&out, "  %-11s %-18s %7.1fms %8.2f %6.1fMB\n", name, "GET "+coldStartRoutes[name], figures.MS(d), ratio, mb)
			if name != "floor" {
				b.ReportMetric(ratio, name+"-ratio")
				b.ReportMetric(mb, name+"-MB")
			}
		}
		out.WriteString("  goals: ratio <= 1.3 each; RSS install <= 64 MB, getport and setingress <= 30 MB")
		b.Log(out.String())
	}
}

// coldStart execs bin/name on a free port with its run's environment, asks
// its cold-start route as the demo tenant until it answers 200, and returns
// the time from exec to that answer and the process's peak RSS (KiB) then.
func coldStart(b *testing.B, env *Env, bin, name string) (time.Duration, int64) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	vars := env.vars["install"]
	if name != "floor" {
		vars = env.vars[name]
	}
	cmd := exec.Command(filepath.Join(bin, name))
	cmd.Env = append(slices.Concat(os.Environ(), vars), "PORT="+port, "LOG_LEVEL=WARN")
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+port+coldStartRoutes[name], nil)
	req.Header.Set("Authorization", "Bearer "+env.Token)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("%s: GET %s = %s", name, coldStartRoutes[name], resp.Status)
			}
			return time.Since(start), peakRSS(b, cmd.Process.Pid)
		}
		if time.Since(start) > 20*time.Second {
			b.Fatalf("%s did not answer in 20s: %v", name, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM), in KiB.
func peakRSS(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// koBuild is what buildShipped reads of a build in ko.yaml.
type koBuild struct {
	ID      string   `json:"id"`
	Env     []string `json:"env"`
	Flags   []string `json:"flags"`
	Ldflags []string `json:"ldflags"`
}

// buildShipped builds pkg into out with the settings ko.yaml gives the
// install image (its env, flags and ldflags), which every function shares.
func buildShipped(ctx context.Context, root, pkg, out string) error {
	raw, err := os.ReadFile(filepath.Join(root, "ko.yaml"))
	if err != nil {
		return err
	}
	var ko struct {
		Builds []koBuild `json:"builds"`
	}
	if err := yaml.Unmarshal(raw, &ko); err != nil {
		return fmt.Errorf("ko.yaml: %w", err)
	}
	i := slices.IndexFunc(ko.Builds, func(b koBuild) bool { return b.ID == "install" })
	if i < 0 {
		return errors.New("ko.yaml has no build of install")
	}
	kb := ko.Builds[i]
	args := append([]string{"build", "-o", out}, kb.Flags...)
	if len(kb.Ldflags) > 0 {
		args = append(args, "-ldflags="+strings.Join(kb.Ldflags, " "))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir, cmd.Env = root, append(os.Environ(), kb.Env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}
