// Command gpx_orbweaver is the backend of the Orbweaver Grafana datasource.
// Grafana starts it (hashicorp/go-plugin over gRPC); started by hand it
// prints that it is a plugin and exits.
package main

import (
	"os"

	"github.com/grafana/grafana-plugin-sdk-go/backend/datasource"
	"github.com/grafana/grafana-plugin-sdk-go/backend/log"

	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/plugin"
)

func main() {
	if err := datasource.Manage(plugin.ID, plugin.NewDatasource, datasource.ManageOpts{}); err != nil {
		log.DefaultLogger.Error("serve plugin", "err", err)
		os.Exit(1)
	}
}
