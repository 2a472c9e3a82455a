// Command etcd is upstream etcd's server entry point, built from the published
// go.etcd.io/etcd/server/v3 module (the etcd binary's own module is not what we pin).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
