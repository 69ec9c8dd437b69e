// Command floor is the cold-start baseline of berth's benchmarks: the least a
// function that reads the cluster does. It loads its client configuration as
// berth's functions do ($KUBECONFIG, or in-cluster), serves on $PORT, and
// answers each request with one ConfigMap listed from the API server.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", ":"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l, err := cs.CoreV1().ConfigMaps("default").List(r.Context(), metav1.ListOptions{Limit: 1})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%d\n", len(l.Items))
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
