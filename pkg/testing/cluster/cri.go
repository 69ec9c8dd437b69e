package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func criClient(socket string) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return conn, runtimeapi.NewRuntimeServiceClient(conn), nil
}

// criReady reports whether containerd answers on CRI with its runtime ready.
func criReady(ctx context.Context, socket string) (bool, error) {
	conn, rt, err := criClient(socket)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	st, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return false, err
	}
	for _, c := range st.GetStatus().GetConditions() {
		if c.Type == runtimeapi.RuntimeReady && !c.Status {
			return false, fmt.Errorf("runtime not ready: %s", c.Message)
		}
	}
	return true, nil
}

// removePods stops and removes every pod sandbox through CRI, so containerd
// releases each pod's network (CNI DEL), network namespace and mounts.
func removePods(ctx context.Context, socket string) error {
	conn, rt, err := criClient(socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range list.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.Metadata.GetName(), err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.Metadata.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

func httpOK(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
