// Package echogateway is the sample gateway that charts/echo-gateway runs: a
// small TCP and UDP server to copy. Each TCP connection gets a greeting line,
// then its bytes echoed back; each UDP datagram gets "<greeting>: <datagram>".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Settings are read from the chart's settings.json.
type Settings struct {
	// Greeting starts every answer.
	Greeting string `json:"greeting"`
}

// LoadSettings reads a settings file; a missing file gives the defaults.
func LoadSettings(path string) (Settings, error) {
	s := Settings{Greeting: "echo-gateway"}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || path == "" {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if s.Greeting == "" {
		s.Greeting = "echo-gateway"
	}
	return s, nil
}

// Server answers TCP and UDP.
type Server struct {
	Settings Settings
	Log      *slog.Logger
	// IdleTimeout closes a TCP connection that sends nothing for this long.
	IdleTimeout time.Duration
	// MaxBytes bounds what one TCP connection may echo.
	MaxBytes int64
}

// ServeTCP serves ln until ctx is done.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			s.echo(c)
		}()
	}
}

func (s *Server) echo(c net.Conn) {
	if _, err := fmt.Fprintf(c, "%s\n", s.Settings.Greeting); err != nil {
		return
	}
	buf := make([]byte, 4096)
	var total int64
	for total < s.MaxBytes {
		_ = c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		n, err := c.Read(buf)
		if n > 0 {
			total += int64(n)
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				s.Log.Debug("tcp read", "error", err.Error())
			}
			return
		}
	}
}

// ServeUDP serves pc until ctx is done.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	go func() { <-ctx.Done(); pc.Close() }()
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		reply := append([]byte(s.Settings.Greeting+": "), buf[:n]...)
		if _, err := pc.WriteTo(reply, addr); err != nil {
			s.Log.Debug("udp write", "error", err.Error())
		}
	}
}
