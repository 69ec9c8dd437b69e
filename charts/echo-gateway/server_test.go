package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEchoTCPAndUDP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "settings.json")
	if err := os.WriteFile(path, []byte(`{"greeting":"hello from gw-1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	settings, err := LoadSettings(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Server{Settings: settings, Log: slog.New(slog.DiscardHandler), IdleTimeout: time.Second, MaxBytes: 1 << 10}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go s.ServeTCP(ctx, ln)
	go s.ServeUDP(ctx, pc)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); line != "hello from gw-1\n" {
		t.Errorf("TCP greeting = %q", line)
	}
	c.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "ping" {
		t.Errorf("TCP echo = %q, %v", got, err)
	}

	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("ping"))
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "hello from gw-1: ping" {
		t.Errorf("UDP answer = %q, %v", buf[:n], err)
	}
}

func TestSettingsDefaults(t *testing.T) {
	if s, err := LoadSettings(filepath.Join(t.TempDir(), "missing.json")); err != nil || s.Greeting != "echo-gateway" {
		t.Errorf("missing settings = %+v, %v", s, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("{"), 0o600)
	if _, err := LoadSettings(bad); err == nil {
		t.Error("a malformed settings file was accepted")
	}
}
