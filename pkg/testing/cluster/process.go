package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one part of the cluster running as a child, its output in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

// start runs bin with args, logging to <logs>/<name>.log. The child gets its own
// process group and is killed if this process dies.
func start(logs, name, bin string, env []string, args ...string) (*process, error) {
	log, err := os.Create(filepath.Join(logs, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// exited reports whether the process has ended, with its log's last lines.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%s); last log lines:\n%s", p.name, p.cmd.ProcessState, tail(p.log.Name(), 15))
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group and SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processesUnder lists the processes whose command line names dir: every part
// of the cluster, and containerd's shims, is started with a path inside it.
func processesUnder(dir string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if strings.Contains(cmdline, dir) {
			found[pid] = cmdline
		}
	}
	return found
}

// killUnder kills every process processesUnder finds, and waits for them to go.
func killUnder(dir string) {
	procs := processesUnder(dir)
	for pid := range procs {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(procs) > 0 && time.Now().Before(deadline) {
		for pid := range procs {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				delete(procs, pid)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}
