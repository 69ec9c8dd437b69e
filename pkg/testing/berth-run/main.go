// Command berth-run runs berth's main job locally (`make run`): a local control
// plane, demo entry points, the three functions chained by events, and one
// install of the sample gateway, then serves until Ctrl-C. With -traces it also
// runs an OTLP receiver on loopback, has the functions export to it, and prints
// the demo install's trace as a tree with timings, and the entry points' fill.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/pkg/testing/localrun"
	"github.com/berth-dev/berth/pkg/testing/otlpsink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "berth-run:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	traces := flag.Bool("traces", false, "run an OTLP receiver on loopback and print the demo's trace and the entry points' fill")
	flag.Parse()
	opts := localrun.Options{Root: root, Dir: filepath.Join(cache, "berth", "run"), Out: os.Stdout}
	var sink *otlpsink.Sink
	if *traces {
		if sink, err = otlpsink.Start("127.0.0.1:0"); err != nil {
			return err
		}
		defer sink.Close()
		opts.Env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.URL(), "OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_BSP_SCHEDULE_DELAY=200"}
		fmt.Printf("==> OTLP receiver at %s\n", sink.URL())
	}
	env, err := localrun.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer env.Close()
	end, err := env.Demo(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nThe sample gateway %s is exposed at %s:%d/%s (entry point %s, backend %s).\n",
		end.Service, end.IP, end.Port, end.Protocol, end.EntryPoint, end.Backend)
	if sink != nil {
		show(ctx, sink, env.DemoTraceID)
	}
	env.Usage(os.Stdout)
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}

// show prints the demo's trace, once setingress's spans have arrived, and
// each entry point's ports by state as the functions last reported them.
func show(ctx context.Context, sink *otlpsink.Sink, trace string) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = sink.WaitFor(wctx, func(s *otlpsink.Sink) bool {
		return slices.ContainsFunc(s.Trace(trace), func(sp otlpsink.Span) bool { return sp.Name == "route shared-ip" }) &&
			len(s.Points("berth.port.usage")) > 0
	})
	fmt.Printf("\nThe demo install's trace %s (ms from its start, +duration):\n", trace)
	sink.WriteTree(os.Stdout, trace)
	latest := map[string]otlpsink.Point{}
	for _, p := range sink.Points("berth.port.usage") {
		k := p.Attrs["berth.entry_point"] + " " + p.Attrs["network.transport"] + " " + p.Attrs["berth.port.state"]
		if q, ok := latest[k]; !ok || p.Time.After(q.Time) {
			latest[k] = p
		}
	}
	fill := map[string][]string{}
	for _, p := range latest {
		k := p.Attrs["berth.entry_point"] + " " + p.Attrs["network.transport"]
		fill[k] = append(fill[k], fmt.Sprintf("%s %d", p.Attrs["berth.port.state"], p.Int))
	}
	fmt.Println("\nEntry points' ports (berth.port.usage):")
	keys := make([]string, 0, len(fill))
	for k := range fill {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		slices.Sort(fill[k])
		fmt.Printf("  %-28s %s\n", k, strings.Join(fill[k], ", "))
	}
}
