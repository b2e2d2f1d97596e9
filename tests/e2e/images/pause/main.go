// The pod sandbox's pause program for images built without a registry: it holds the pod's
// namespaces and sleeps until the runtime stops it with SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
