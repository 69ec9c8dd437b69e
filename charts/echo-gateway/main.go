// Command echo-gateway is the sample gateway of charts/echo-gateway.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	tcp := flag.String("tcp", ":7000", "TCP address to listen on")
	udp := flag.String("udp", ":7001", "UDP address to listen on")
	settings := flag.String("settings", "/etc/gateway/settings.json", "settings file (JSON)")
	flag.Parse()
	if err := run(*tcp, *udp, *settings); err != nil {
		fmt.Fprintln(os.Stderr, "echo-gateway:", err)
		os.Exit(1)
	}
}

func run(tcpAddr, udpAddr, settingsPath string) error {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	s, err := LoadSettings(settingsPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		return err
	}
	srv := &Server{Settings: s, Log: log, IdleTimeout: 5 * time.Minute, MaxBytes: 1 << 20}
	log.Info("serving", "tcp", ln.Addr().String(), "udp", pc.LocalAddr().String())
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTCP(ctx, ln) }()
	go func() { errc <- srv.ServeUDP(ctx, pc) }()
	if err := <-errc; err != nil {
		return err
	}
	return <-errc
}
