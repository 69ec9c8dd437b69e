package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The traces a cluster leaves on the host, and how each is found and removed.
// Down removes them; Up removes any a crashed run left; Leftovers lists them.

const (
	cgroupRoot  = "/sys/fs/cgroup"
	podsCgroup  = "kubepods" // kubelet's cgroupfs root for pods
	bridgeName  = "cni0"
	netnsPrefix = "cni-" // containerd's pod network namespaces in /run/netns
)

var chainPrefixes = []string{"KUBE-", "CNI-"}

// Leftovers lists what a cluster whose state lives in dir has left on the host:
// processes, mounts, iptables chains, cgroups and the bridge. Empty is clean.
func Leftovers(dir, imageCache string) []string {
	var out []string
	for pid, cmd := range processesUnder(dir) {
		out = append(out, fmt.Sprintf("process %d: %s", pid, clip(cmd)))
	}
	for _, m := range mountsOf(dir, imageCache) {
		out = append(out, "mount "+m)
	}
	for _, c := range chains() {
		out = append(out, "iptables chain "+c)
	}
	for _, c := range cgroups() {
		out = append(out, "cgroup "+c)
	}
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil {
		out = append(out, "network link "+bridgeName)
	}
	slices.Sort(out)
	return out
}

func clip(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

// cleanHost removes every trace Leftovers would find, in the order that lets
// each step succeed: processes, pods' processes, mounts, cgroups, rules, link.
func cleanHost(dir, imageCache string) {
	killUnder(dir)
	killCgroups()
	for _, m := range slices.Backward(mountsOf(dir, imageCache)) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
		if strings.HasPrefix(filepath.Base(m), netnsPrefix) {
			_ = os.Remove(m)
		}
	}
	removeCgroups()
	removeChains()
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil {
		_ = exec.Command("ip", "link", "delete", bridgeName).Run()
	}
	removeContainerLogLinks(dir)
}

// mountsOf lists mount points inside dir or imageCache, and pod network
// namespaces, in mount order.
func mountsOf(dir, imageCache string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		switch {
		case within(mp, dir), imageCache != "" && within(mp, imageCache),
			strings.HasPrefix(mp, "/run/netns/"+netnsPrefix), strings.HasPrefix(mp, "/var/run/netns/"+netnsPrefix):
			if !slices.Contains(out, mp) {
				out = append(out, mp)
			}
		}
	}
	return out
}

func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimRight(dir, "/")+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// podCgroupDirs lists kubelet's pod cgroup folders in every hierarchy, deepest first.
func podCgroupDirs() []string {
	var dirs []string
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range hierarchies {
		root := filepath.Join(cgroupRoot, h.Name(), podsCgroup)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs
}

// cgroups lists kubelet's pod cgroup roots still present.
func cgroups() []string {
	var out []string
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range hierarchies {
		p := filepath.Join(cgroupRoot, h.Name(), podsCgroup)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// killCgroups kills every process left in a pod cgroup (a crashed run's pods).
func killCgroups() {
	for range 3 {
		left := 0
		for _, d := range podCgroupDirs() {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					left++
				}
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func removeCgroups() {
	for range 20 {
		dirs := podCgroupDirs()
		if len(dirs) == 0 {
			return
		}
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var iptablesTables = []string{"filter", "nat", "mangle", "raw"}

// chains lists the KUBE-* and CNI-* chains in iptables and ip6tables.
func chains() []string {
	var out []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, t := range iptablesTables {
			for _, c := range ourChains(save(bin, t)) {
				out = append(out, bin+" "+t+" "+c)
			}
		}
	}
	return out
}

func save(bin, table string) []byte {
	out, _ := exec.Command(bin+"-save", "-t", table).Output()
	return out
}

func ours(chain string) bool {
	for _, p := range chainPrefixes {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}

func ourChains(dump []byte) []string {
	var out []string
	for line := range bytes.Lines(dump) {
		if len(line) > 1 && line[0] == ':' {
			name := strings.Fields(string(line[1:]))[0]
			if ours(name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// removeChains deletes the rules in built-in chains that jump to our chains,
// then flushes and deletes our chains.
func removeChains() {
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, t := range iptablesTables {
			dump := save(bin, t)
			mine := ourChains(dump)
			if len(mine) == 0 {
				continue
			}
			for line := range bytes.Lines(dump) {
				f := splitRule(string(line))
				if len(f) < 4 || f[0] != "-A" || ours(f[1]) {
					continue
				}
				if j := slices.Index(f, "-j"); j > 0 && j+1 < len(f) && ours(f[j+1]) {
					_ = exec.Command(bin, append([]string{"-t", t, "-D"}, f[1:]...)...).Run()
				}
			}
			for _, c := range mine {
				_ = exec.Command(bin, "-t", t, "-F", c).Run()
			}
			for _, c := range mine {
				_ = exec.Command(bin, "-t", t, "-X", c).Run()
			}
		}
	}
}

// removeContainerLogLinks removes kubelet's /var/log/containers links into dir.
func removeContainerLogLinks(dir string) {
	entries, _ := os.ReadDir("/var/log/containers")
	for _, e := range entries {
		p := filepath.Join("/var/log/containers", e.Name())
		if target, err := os.Readlink(p); err == nil && within(target, dir) {
			_ = os.Remove(p)
		}
	}
}

// splitRule splits an iptables-save rule into arguments, honouring its double
// quotes ("kubernetes service portals") and backslash escapes.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inArg = true
		case c == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t' || c == '\n'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
