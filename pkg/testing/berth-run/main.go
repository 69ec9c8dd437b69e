// Command berth-run runs berth's main job locally (`make run`): a local control
// plane, demo entry points, the three functions chained by events, and one
// install of the sample gateway, then serves until Ctrl-C.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/pkg/testing/localrun"
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
	env, err := localrun.Start(ctx, localrun.Options{Root: root, Dir: filepath.Join(cache, "berth", "run"), Out: os.Stdout})
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
	env.Usage(os.Stdout)
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}
