package function

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// childEnv makes the test binary run as a function process (see TestMain), so that
// the tests can signal a real process.
const childEnv = "BERTH_FUNCTION_TEST_CHILD"

type childSpec struct {
	Config
	// Greeting is a function's own setting, to show that it is validated too.
	Greeting string `default:"hello"`
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		var spec childSpec
		Main("child", &spec, func(context.Context, *slog.Logger) (Function, error) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
				Logger(r.Context()).Info("slow request started")
				time.Sleep(time.Second)
				io.WriteString(w, spec.Greeting)
			})
			if os.Getenv("CHILD_NO_GATE") == "1" {
				return Function{API: mux}, nil
			}
			warm := func(context.Context) { slog.Info("warmed") }
			return Function{API: mux, Gate: openGate{}, Warm: warm}, nil
		})
		return
	}
	os.Exit(m.Run())
}

// openGate lets every request in: these tests are about the runtime, and
// pkg/auth's Guard is tested against a real API server.
type openGate struct{}

func (openGate) Authenticate(r *http.Request) (context.Context, error) { return r.Context(), nil }
func (openGate) AuthorizeDelivery(ctx context.Context, _ event.Event) (context.Context, error) {
	return ctx, nil
}

func TestMainRefusesAFunctionWithoutGate(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_NO_GATE=1", "PORT=0")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "must authenticate") {
		t.Errorf("a function without a Gate: %v, %s; want it to refuse to start", err, out)
	}
}

func child(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=1", "PORT=0"}, env...)...)
	return cmd
}

// started starts cmd and returns its stdout; the test kills it at the end.
func started(t *testing.T, cmd *exec.Cmd) io.Reader {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return out
}

func TestSIGTERMDrainsInFlightRequest(t *testing.T) {
	cmd := child(t)
	out := started(t, cmd)
	lines := make(chan map[string]any, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
		close(lines)
	}()
	waitFor := func(msg string) map[string]any {
		for l := range lines {
			if l["msg"] == msg {
				return l
			}
		}
		t.Fatalf("the child exited before logging %q", msg)
		return nil
	}
	addr := waitFor("serving")["address"].(string)
	addr = "127.0.0.1:" + addr[strings.LastIndex(addr, ":")+1:]

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor("slow request started")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor("draining")
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "hello" {
		t.Errorf("in-flight request across SIGTERM = %d %q %v, want 200 \"hello\"", r.status, r.body, r.err)
	}
	waitFor("drained")
	if err := cmd.Wait(); err != nil {
		t.Errorf("child exit after drain = %v, want 0", err)
	}
}

// TestWarmRunsAtStart: a function's Warm runs as it starts, with no request.
func TestWarmRunsAtStart(t *testing.T) {
	cmd := child(t)
	out := started(t, cmd)
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil && l["msg"] == "warmed" {
			return
		}
	}
	t.Error("the child never ran its Warm")
}

func TestInvalidEnvironmentStopsStartup(t *testing.T) {
	tests := []struct {
		env  string
		want string
	}{
		{"PORT=http", "PORT"},
		{"PORT=70000", "PORT"},
		{"READ_TIMEOUT=5", "READ_TIMEOUT"},
		{"DRAIN_TIMEOUT=-1s", "DRAIN_TIMEOUT"},
		{"MAX_REQUEST_BYTES=lots", "MAX_REQUEST_BYTES"},
		{"LOG_LEVEL=LOUD", "LOG_LEVEL"},
		{"K_SINK=not a url", "K_SINK"},
		{"K_SINK=ftp://example.com/", "K_SINK"},
		{`K_CE_OVERRIDES={"extension":{}}`, "K_CE_OVERRIDES"},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			cmd := child(t, tc.env)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("start with %s succeeded, want it refused", tc.env)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("start with %s said %q, want it to name %s", tc.env, out, tc.want)
			}
		})
	}
}
