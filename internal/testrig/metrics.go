package testrig

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric reads one series, as written on /metrics (`lbctl_reloads_total{outcome="applied"}`),
// from lbctl's http.address addr. A series not written yet is an error.
func Metric(addr, series string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in:\n%s", series, b)
}
